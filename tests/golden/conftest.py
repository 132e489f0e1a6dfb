"""The golden-case generator needs PyTorch; it is run by hand, never collected."""

collect_ignore = ["make_torch_losses.py"]
