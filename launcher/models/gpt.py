"""A small GPT-style language model (causal self-attention, pre-norm blocks), for `task: language_model`.

The shape of nanoGPT's and GPT-2's: token and position embeddings, blocks of causal multi-head
attention (torch's scaled_dot_product_attention) and a GELU MLP, a final LayerNorm and a head tied
to the token embedding; GPT-2's initialization, with the residual projections scaled by
1/sqrt(2 * layers). It returns the logits (batch, time, vocab); the task computes the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width={width} is not a multiple of heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = (
            t.view(batch, time, self.heads, width // self.heads).transpose(1, 2)
            for t in self.qkv(x).split(width, dim=2)
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, time, width))


class TransformerBlock(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """`vocab_size` and `block_size` come from the data (a byte-level corpus: 256, its block length)."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        width: int = 96,
        layers: int = 4,
        heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(block_size, width)
        self.blocks = nn.ModuleList(TransformerBlock(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied: one matrix reads and writes tokens
        self.apply(_gpt2_init)
        for name, parameter in self.named_parameters():
            if name.endswith(("attention.proj.weight", "mlp.2.weight")):  # the residual projections
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        time = tokens.shape[1]
        if time > self.block_size:
            raise ValueError(f"a sequence of {time} tokens is longer than the model's block_size={self.block_size}")
        x = self.token_embedding(tokens) + self.position_embedding(torch.arange(time, device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _gpt2_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@torch.no_grad()
def sample(
    model: Callable[[torch.Tensor], torch.Tensor],
    prompt: torch.Tensor,
    new_tokens: int,
    *,
    block_size: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """`prompt` (1-D token ids) followed by `new_tokens` drawn from any model that maps (1, time)
    token ids to (1, time, vocab) logits: the last `block_size` tokens in, the next one sampled
    (temperature, then the top k), greedy where temperature is 0."""
    tokens = prompt.view(1, -1)
    for _ in range(new_tokens):
        logits = model(tokens[:, -block_size:])[:, -1, :].float()
        if temperature == 0:
            following = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probabilities = logits.softmax(dim=-1)
            following = torch.multinomial(probabilities.cpu(), 1, generator=generator).to(tokens.device)
        tokens = torch.cat([tokens, following], dim=1)
    return tokens[0]
