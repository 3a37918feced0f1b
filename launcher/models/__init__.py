"""Models: the launcher's own, and the `model:` section built into a module (torchvision's, the user's, pretrained, frozen)."""
