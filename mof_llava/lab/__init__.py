"""The toy lab: a procedural world, toy CLIP and self-supervised towers trained on it, and what they see."""
