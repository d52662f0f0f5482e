"""Adam for fieldlab's optimisation loops, without the `torch._dynamo` import that `torch.optim.Adam` costs a command.

torch's optimizers wrap their constructor, `step`, `zero_grad` and `state_dict` in `torch._dynamo.disable`,
which imports `torch._dynamo` on first use: 1 to 3 s of a one-image `fieldlab fit` on a CPU, 3.3 s of the
hash grid's 10.6 s command on an H100. Nothing in fieldlab traces its optimizer (`--compile` compiles the
forward and the loss), so `Adam` keeps torch's bookkeeping (param groups, `state_dict` and its format,
schedulers, `GradScaler`) without those wrappers, and does the update itself:

- on CUDA, torch's fused kernel (`torch._fused_adam_`, the kernel of `torch.optim.Adam(fused=True)`, or
  `torch._fused_adamw_` with a weight decay);
- elsewhere, the single-tensor update of `torch.optim.Adam` on a CPU, written out op for op.

The state has torch's names (`step`, `exp_avg`, `exp_avg_sq`) and placement (`step` a CPU scalar, or an fp32
scalar on the device when fused), so checkpoints load into either optimizer (AdamW's too). Weight decay is
AdamW's decoupled one only (`train`'s); no amsgrad, maximize or closure: nothing uses them.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import torch


_TORCH_ONLY = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False}
"""torch.optim.Adam's other group settings, at the values this update has: a state_dict of either optimizer
then loads into the other."""


class Adam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015, https://arxiv.org/abs/1412.6980) with torch's update and state.

    `fused`: step with torch's fused CUDA kernel; None (the default) when every parameter is on CUDA.
    `weight_decay`: decoupled, as torch.optim.AdamW's (Loshchilov & Hutter 2019): each step first scales a
    parameter by 1 − lr · weight_decay (`train`'s networks; fits use none).

    >>> field = torch.nn.Linear(2, 3)
    >>> optimizer = Adam(field.parameters(), lr=1e-3)
    >>> field(torch.ones(4, 2)).square().mean().backward()
    >>> optimizer.step()
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict], *, lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 fused: bool | None = None):
        params = list(params)
        if fused is None:
            tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
            fused = bool(tensors) and all(p.device.type == "cuda" for p in tensors)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "fused": fused, "weight_decay": weight_decay,
                                  "decoupled_weight_decay": weight_decay != 0, **_TORCH_ONLY})
        # As torch's fused Adam: a GradScaler hands this step its scale and inf flag (`grad_scale`, `found_inf`)
        # and the kernel unscales, and skips a step with an inf, on the device (no synchronisation a step).
        self._step_supports_amp_scaling = fused

    # torch's own methods, without the `torch._dynamo.disable` wrapper each has (the import described above;
    # the wrapper only matters to a traced optimizer). `inspect.unwrap` leaves an unwrapped method as it is.
    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, then (fused) each `step` moved where the kernel reads it: a state saved by an unfused
        optimizer keeps it a CPU scalar, which the kernel does not take."""
        inspect.unwrap(torch.optim.Optimizer.load_state_dict)(self, state_dict)
        if self.defaults["fused"]:  # this optimizer's, whichever optimizer saved the state
            for p, s in self.state.items():
                s["step"] = s["step"].to(device=p.device, dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One Adam step of every parameter that has a gradient."""
        if closure is not None:
            raise ValueError("fieldlab's Adam takes no closure")
        fused = self.defaults["fused"]  # this optimizer's, whichever optimizer saved a loaded state
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if not self.state[p]:
                    self.state[p] = self._fresh_state(p, fused)
            if fused:
                self._fused_step(group, params)
            else:
                for p in params:
                    self._single_step(group, p)

    @staticmethod
    def _fresh_state(p: torch.Tensor, fused: bool) -> dict[str, torch.Tensor]:
        step = torch.zeros((), dtype=torch.float32, device=p.device) if fused else torch.tensor(0.0)
        return {"step": step, "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}

    def _single_step(self, group: dict, p: torch.Tensor) -> None:
        # The order and form of torch.optim.Adam's single-tensor update (no capturable; weight decay decoupled,
        # as AdamW's), so the result is bit-equal to it.
        beta1, beta2 = group["betas"]
        state = self.state[p]
        grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
        state["step"] += 1
        step = state["step"].item()
        if group["weight_decay"] != 0:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = group["lr"] / (1 - beta1 ** step)
        denom = (exp_avg_sq.sqrt() / (1 - beta2 ** step) ** 0.5).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def _fused_step(self, group: dict, params: list[torch.Tensor]) -> None:
        beta1, beta2 = group["betas"]
        by_kind: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for p in params:  # the kernel takes one device and dtype per call
            by_kind.setdefault((p.device, p.dtype), []).append(p)
        grad_scale, found_inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        for (device, _), same in by_kind.items():
            states = [self.state[p] for p in same]
            steps = [s["step"] for s in states]
            scale = grad_scale.to(device, non_blocking=True) if grad_scale is not None else None
            inf = found_inf.to(device, non_blocking=True) if found_inf is not None else None
            torch._foreach_add_(steps, 1)
            kernel = torch._fused_adamw_ if group["weight_decay"] != 0 else torch._fused_adam_
            kernel(same, [p.grad for p in same], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                   [], steps, amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                   grad_scale=scale, found_inf=inf)
            if inf is not None:  # a skipped step does not count
                torch._foreach_sub_(steps, [inf] * len(steps))
