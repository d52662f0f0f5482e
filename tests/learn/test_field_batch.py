import torch

from fieldlab.fields import FieldStack, make_config
from fieldlab.learn import grid, qmc
from fieldlab.learn.field_batch import FieldEvaluator


def test_field_batch_equals_each_field_alone():
    config = make_config("siren", out_dim=2, hidden_dim=16, num_layers=2)
    modules = [config.build() for _ in range(3)]
    stack = FieldStack.from_modules(modules)
    params = {name: stack.params[name.replace(".", "__")].detach() for name in stack._names}
    pts = qmc(50, 2, scramble=True)
    out = FieldEvaluator(config)(params, pts)
    assert out.values.shape == (3, 50, 2) and out.points is pts
    for i, module in enumerate(modules):
        assert torch.allclose(out.values[i], module(pts.coords), atol=1e-6)


def test_functa_latents_are_evaluated_with_the_shared_network_held_once():
    config = make_config("functa", out_dim=1, hidden_dim=16, num_layers=2, latent_dim=8)
    shared_module = config.build()
    shared = {k: v.detach() for k, v in shared_module.named_parameters() if k != "latent"}
    latents = torch.randn(4, 8)
    out = FieldEvaluator(config, shared)({"latent": latents}, grid((5, 5)))
    for i in range(4):
        with torch.no_grad():
            shared_module.latent.copy_(latents[i])
            ref = shared_module(grid((5, 5)).coords)
        assert torch.allclose(out.values[i], ref, atol=1e-5)
