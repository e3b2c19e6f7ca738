"""Reference values for tests/test_nn_functional.c, from PyTorch (1.13).

Not run by the tests: run it by hand (python3 tests/reference/nn_functional.py) and paste
its output into the test's "reference values" block. Inputs come from pattern(), which the
test computes the same way, so only the expected results are printed.
"""
import math
import warnings

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
# mse_loss warns about the broadcast case on purpose.
warnings.filterwarnings("ignore", message="Using a target size")


def pattern(n, a, b, scale=1.0):
    """scale * sin(a*i + b) for i in 0..n-1 (the test's pattern())."""
    return [scale * math.sin(a * i + b) for i in range(n)]


def t(shape, a, b, scale=1.0):
    return torch.tensor(pattern(math.prod(shape), a, b, scale)).reshape(shape)


def emit(name, tensor):
    vals = tensor.detach().reshape(-1).tolist()
    names = {math.inf: "INFINITY", -math.inf: "-INFINITY"}
    body = ", ".join("NAN" if math.isnan(v) else names.get(v, repr(float(v))) for v in vals)
    print(f"static const double {name}[] = {{{body}}};")


# linear: x [2, 3], weight [4, 3], bias [4]; 1-D and batched inputs.
x = t((2, 3), 0.9, 0.1)
w = t((4, 3), 0.5, 0.3)
b = t((4,), 1.1, 0.2)
emit("LINEAR_2D", F.linear(x, w, b))
emit("LINEAR_1D", F.linear(x[0], w, b))
emit("LINEAR_3D_NOBIAS", F.linear(t((2, 2, 3), 0.7, 0.4), w))

# layer_norm over the last dim of [3, 4] with weight/bias, without affine, eps 0.1.
x = t((3, 4), 1.3, 0.5, 2.0)
w = t((4,), 0.8, 1.0)
b = t((4,), 0.6, -0.4)
emit("LN_AFFINE", F.layer_norm(x, (4,), w, b, 1e-5))
emit("LN_PLAIN", F.layer_norm(x, (4,), None, None, 1e-5))
emit("LN_EPS", F.layer_norm(x, (4,), None, None, 0.1))
# two normalised dims: x [2, 3, 4], weight/bias [3, 4]
x3 = t((2, 3, 4), 0.45, 0.2, 3.0)
emit("LN_2DIMS", F.layer_norm(x3, (3, 4), t((3, 4), 0.3, 0.7), t((3, 4), 0.25, -1.0), 1e-5))
# non-contiguous: the transpose of a [4, 3] pattern, normalised over its last dim
xt = t((4, 3), 1.3, 0.5, 2.0).t()
emit("LN_TRANSPOSED", F.layer_norm(xt, (4,), w, b, 1e-5))
# gradients of sum(y * r) for the affine case
x.requires_grad_(True)
w.requires_grad_(True)
b.requires_grad_(True)
r = t((3, 4), 0.37, 0.9)
(F.layer_norm(x, (4,), w, b, 1e-5) * r).sum().backward()
emit("LN_GRAD_X", x.grad)
emit("LN_GRAD_W", w.grad)
emit("LN_GRAD_B", b.grad)

# cross_entropy: logits [4, 5], class targets [4]
logits = t((4, 5), 0.77, 0.3, 2.0)
target = torch.tensor([1, 0, 4, 2])
for red in ("none", "sum", "mean"):
    emit(f"CE_{red.upper()}", F.cross_entropy(logits, target, reduction=red))
emit("CE_SMOOTH_NONE", F.cross_entropy(logits, target, reduction="none", label_smoothing=0.1))
emit("CE_SMOOTH_MEAN", F.cross_entropy(logits, target, label_smoothing=0.1))
ign = torch.tensor([1, -100, 4, -100])
emit("CE_IGNORE_NONE", F.cross_entropy(logits, ign, reduction="none"))
emit("CE_IGNORE_MEAN", F.cross_entropy(logits, ign))
emit("CE_IGNORE_SUM", F.cross_entropy(logits, ign, reduction="sum"))
emit("CE_IGNORE2_SMOOTH_MEAN", F.cross_entropy(logits, target, ignore_index=2, label_smoothing=0.1))
emit("CE_ALL_IGNORED", F.cross_entropy(logits, torch.full((4,), -100)))
# [N, C, d]: logits [2, 3, 4], targets [2, 4]
logits3 = t((2, 3, 4), 0.61, -0.2, 1.5)
target3 = torch.tensor([[0, 2, 1, 1], [2, 0, 0, 1]])
emit("CE_NCD_NONE", F.cross_entropy(logits3, target3, reduction="none"))
emit("CE_NCD_MEAN", F.cross_entropy(logits3, target3))
emit("CE_NCD_SMOOTH_SUM", F.cross_entropy(logits3, target3, reduction="sum", label_smoothing=0.1))
# unbatched logits [C], 0-dim target
emit("CE_UNBATCHED", F.cross_entropy(logits[0], torch.tensor(3)))
# probability targets: softmax of a pattern
probs = torch.softmax(t((4, 5), 0.53, 0.8, 1.2), 1)
for red in ("none", "sum", "mean"):
    emit(f"CE_PROB_{red.upper()}", F.cross_entropy(logits, probs, reduction=red))
emit("CE_PROB_SMOOTH_NONE", F.cross_entropy(logits, probs, reduction="none", label_smoothing=0.1))
# gradient of the mean loss with smoothing and an ignored sample
lg = logits.clone().requires_grad_(True)
F.cross_entropy(lg, torch.tensor([1, -100, 4, 2]), label_smoothing=0.1).backward()
emit("CE_GRAD_SMOOTH_IGNORE", lg.grad)
# large logits stay finite (stable log-sum-exp)
big = torch.tensor([[1000.0, 0.0, -1000.0], [-500.0, 500.0, 499.0]])
emit("CE_BIG_NONE", F.cross_entropy(big, torch.tensor([2, 2]), reduction="none"))
# a masked class (-inf logit): finite without smoothing, inf with it
masked = torch.tensor([[0.0, -math.inf, 1.0]])
emit("CE_MASKED", F.cross_entropy(masked, torch.tensor([2])))
emit("CE_MASKED_SMOOTH", F.cross_entropy(masked, torch.tensor([2]), label_smoothing=0.1))

# bce_with_logits: x [2, 3], t in [0, 1], pos_weight [3]
x = t((2, 3), 1.9, 0.4, 3.0)
tt = torch.tensor(pattern(6, 0.8, 0.1)).reshape(2, 3).abs()
pw = torch.tensor([0.5, 2.0, 3.0])
for red in ("none", "sum", "mean"):
    emit(f"BCE_{red.upper()}", F.binary_cross_entropy_with_logits(x, tt, reduction=red))
emit("BCE_PW_NONE", F.binary_cross_entropy_with_logits(x, tt, pos_weight=pw, reduction="none"))
emit("BCE_PW_MEAN", F.binary_cross_entropy_with_logits(x, tt, pos_weight=pw))
xl = torch.tensor([-200.0, -50.0, 0.0, 50.0, 200.0])
tl = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0])
emit("BCE_LARGE", F.binary_cross_entropy_with_logits(xl, tl, reduction="none"))
emit("BCE_LARGE_F32", F.binary_cross_entropy_with_logits(xl.float(), tl.float(), reduction="none"))
xg = xl.clone().requires_grad_(True)
F.binary_cross_entropy_with_logits(xg, tl, pos_weight=torch.tensor(2.0), reduction="sum").backward()
emit("BCE_LARGE_PW_GRAD", xg.grad)

# mse_loss: equal shapes, and broadcasting [3, 1] against [4]
a = t((3, 4), 0.3, 0.2, 2.0)
c = t((3, 4), 0.7, 1.2)
for red in ("none", "sum", "mean"):
    emit(f"MSE_{red.upper()}", F.mse_loss(a, c, reduction=red))
emit("MSE_BROADCAST_MEAN", F.mse_loss(t((3, 1), 0.9, 0.0), t((4,), 0.4, 1.0)))

# embedding: weight [5, 3], indices [2, 2] with a repeat; weight gradient of sum(y * r)
wt = t((5, 3), 0.35, -0.6).requires_grad_(True)
idx = torch.tensor([[4, 0], [2, 4]])
y = F.embedding(idx, wt)
emit("EMB_VALUES", y)
(y * t((2, 2, 3), 0.5, 0.5)).sum().backward()
emit("EMB_GRAD_W", wt.grad)
