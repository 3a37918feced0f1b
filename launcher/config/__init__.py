"""The recipe: its schema, YAML loading, command-line overrides, problems with dotted paths, and components (a name in a recipe resolved to the callable it names)."""
