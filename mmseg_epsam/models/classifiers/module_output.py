"""The output of a named submodule, by a forward hook that stops the forward there.

The patch classifier reads its CAM layer this way (docs/method.md §3), so any backbone whose
CAM layer is a module (``'layer4.0'`` of ``EVPADLResNet``, ``'layer4'`` of MMSeg's
``ResNetV1c`` or MMPretrain's ``ResNet``) serves, and the layers after it do not run.
"""
import torch
import torch.nn as nn


class _ModuleReached(Exception):
    """Raised by the hook to leave the forward pass with the module's output."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


def named_submodule(model: nn.Module, module_name: str) -> nn.Module:
    """``model.get_submodule(module_name)``, with a ValueError listing a few valid names."""
    try:
        return model.get_submodule(module_name)
    except AttributeError as exc:
        names = [name for name, _ in model.named_modules() if name]
        raise ValueError(f'{module_name!r} names no module of {type(model).__name__}; e.g. '
                         f'{names[:3]} ... {names[-3:]}') from exc


def module_output(model: nn.Module, module_name: str, inputs: torch.Tensor) -> torch.Tensor:
    """Run ``model(inputs)`` until submodule ``module_name`` has run; return its output.

    Args:
        model: The network, e.g. a backbone.
        module_name: Dotted name as in ``model.named_modules()``, e.g. ``'layer4.0'``.
        inputs: The network's input.

    Returns:
        The output of the first call of that module; later modules do not run.
    """
    module = named_submodule(model, module_name)

    def stop(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        raise _ModuleReached(output)

    handle = module.register_forward_hook(stop)
    try:
        model(inputs)
    except _ModuleReached as reached:
        return reached.output
    finally:
        handle.remove()
    raise ValueError(f'the forward of {type(model).__name__} never runs {module_name!r}')
