"""Which weights made an output: a fingerprint that stage outputs are checked against."""
import hashlib

import torch


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-1 of the model's state dict (names and bytes): which weights made the outputs."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
