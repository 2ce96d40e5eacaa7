"""A fake accelerator, so that the device tests can fail on a machine without a GPU.

Inside `with FakeAccelerator():`, a tensor moved to `FAKE` (torch's `meta` device, used here as a label)
keeps its CPU data but is tagged as living on the accelerator: it reports `device == FAKE`, and, as on a
GPU, an operation that mixes it with a CPU tensor (other than a 0-d tensor or an index), that draws from
a CPU generator, or that needs CPU memory (`.numpy()`, `torch.set_rng_state`) raises. Factories called
with `device=FAKE` make tagged tensors, and `.to(FAKE)` / `.cpu()` move between the two sides. So code
that forgets to move a tensor fails here as it would on CUDA, and the numbers are the CPU's, bit for bit.
Only what goes through torch's function overrides is seen: enough for this library, not a real device.
"""
import torch
from torch.overrides import TorchFunctionMode

FAKE = torch.device("meta")
_TAG = "_on_fake_accelerator"
T = torch.Tensor
_NO_CHECK = {torch._has_compatible_shallow_copy_type, T.copy_}   # cross-device copies are allowed
_PACKED = ("_pack_padded_sequence", "_pad_packed_sequence", "gru", "lstm", "rnn_tanh", "rnn_relu")   # take CPU lengths


def on_fake(t) -> bool:
    "Is `t` a tensor on the fake accelerator?"
    return isinstance(t, torch.Tensor) and getattr(t, _TAG, False)


def _tensors(x):
    if isinstance(x, torch.Tensor): yield x
    elif isinstance(x, (list, tuple)):
        for y in x: yield from _tensors(y)
    elif isinstance(x, dict):
        for y in x.values(): yield from _tensors(y)


def _is_fake(d) -> bool:
    if isinstance(d, torch.Tensor): return on_fake(d)
    if isinstance(d, (str, torch.device)): return torch.device(d) == FAKE
    return False


def _real(d):
    "The device to hand to torch: the CPU in place of FAKE."
    return "cpu" if isinstance(d, (str, torch.device)) and _is_fake(d) else d


def _name(func): return getattr(func, "__qualname__", getattr(func, "__name__", str(func)))


def _mixed(func, args, kwargs):
    "Raise as CUDA does when `func` mixes accelerator and CPU tensors."
    if func in _NO_CHECK: return
    if _name(func).endswith("_pack_padded_sequence") and on_fake(args[1]):   # as on CUDA: lengths must stay on the CPU
        raise RuntimeError("'lengths' argument should be a 1D CPU int64 tensor, but got 1D fake int64 tensor")
    if _name(func).endswith(_PACKED):                   # packed sequences: their lengths / batch_sizes live on the CPU
        args = tuple(a for a in args if not (isinstance(a, torch.Tensor) and not on_fake(a) and a.dim() == 1
                                             and a.dtype == torch.int64))
    if func in (T.__getitem__, T.__setitem__):   # CPU indices into an accelerator tensor are fine, as on CUDA
        self, idx, value = args[0], list(_tensors(args[1])), list(_tensors(args[2:]))
        ts = [self] + value + ([] if on_fake(self) else idx)
    else:
        ts = list(_tensors((args, kwargs)))
    if any(map(on_fake, ts)) and any(not on_fake(t) and t.dim() > 0 for t in ts):
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"the fake accelerator and cpu! ({_name(func)})")


class FakeAccelerator(TorchFunctionMode):
    "While active, tensors tagged as on `FAKE` behave, for device checks, like tensors on a GPU."

    def __enter__(self):
        # Parameter.__deepcopy__ rebuilds the parameter out of sight of the overrides: carry the tag over
        self._deepcopy = real = torch.nn.Parameter.__deepcopy__
        def deepcopy(p, memo):
            out = real(p, memo); setattr(out, _TAG, on_fake(p)); return out
        torch.nn.Parameter.__deepcopy__ = deepcopy
        return super().__enter__()

    def __exit__(self, *exc):
        torch.nn.Parameter.__deepcopy__ = self._deepcopy
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func == T.device.__get__: return FAKE if on_fake(args[0]) else func(*args)
        if func == T.data.__set__:                              # Module.to swaps parameters' data
            func(*args); setattr(args[0], _TAG, on_fake(args[1])); return None
        target = None                                           # True / False: the result goes to FAKE / the CPU
        if func is T.to:
            dev = next((a for a in args[1:] if isinstance(a, (str, torch.device, torch.Tensor))), kwargs.get("device"))
            if dev is not None:
                target = _is_fake(dev)
                args = tuple(_real(a) for a in args)
                if "device" in kwargs: kwargs["device"] = _real(kwargs["device"])
        elif func is T.cpu: target = False
        elif kwargs.get("device") is not None:
            target = _is_fake(kwargs["device"]); kwargs["device"] = _real(kwargs["device"])
        if target is None: _mixed(func, args, kwargs)
        fake = target if target is not None else any(map(on_fake, _tensors((args, kwargs))))
        if fake and kwargs.get("generator") is not None and kwargs["generator"].device.type == "cpu":
            raise RuntimeError(f"Expected a generator on the accelerator, got a cpu generator ({_name(func)})")
        if fake and func in (T.numpy, T.__array__, torch.set_rng_state):
            raise TypeError(f"can't use a tensor on the fake accelerator in {_name(func)}: copy it to the cpu first")
        out = func(*args, **kwargs)
        if args and out is args[0]:
            if target is None or on_fake(out) == target: return out   # in place, or already there
            out = out.clone()                                           # a transfer copies
        if _name(func).endswith("_pack_padded_sequence"):   # (data, batch_sizes): batch_sizes stays on the CPU, as on CUDA
            setattr(out[0], _TAG, fake); return out
        for t in _tensors(out):
            if fake or on_fake(t): setattr(t, _TAG, fake)
        return out
