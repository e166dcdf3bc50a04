"""Training of the face-mask classifier (workstation side)."""
