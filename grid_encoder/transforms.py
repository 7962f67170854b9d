"""The path of torch.func transforms and forward-mode AD: four autograd Functions over the four operators.

Plain autograd runs the operators' C++ autograd kernels (csrc/autograd.cpp), which have no functorch support
and no forward-mode formula. While a torch.func transform or a forward-mode dual level is active,
``grid_sample`` calls ``Sample`` here instead. Every derivative of a Function is again one of them, so the
transforms nest (``hessian`` is ``jacfwd(jacrev(...))``, ``vmap(grad(...))`` per-sample gradients, and so on):

    Function        computes (operator)                         vjp (reverse)                  jvp (forward)
    Sample          out = F(I, G)                               SampleBackward                 Tangent
    SampleBackward  (gI, gG) = B(gO, I, G)                      DoubleBackward                 B(t_gO) + DB(tI, tG, gO)
    DoubleBackward  (d gO, d I, d G) = DB(ggI, ggG, gO, I, G)   the reference's (exact, slow)  the reference's
    Tangent         T(tI, tG, I, G) = dF/dI tI + dF/dG tG       B(u) + DB(tI, tG, u)           the reference's

with I = input, G = grid, gO = grad_output, t* the tangents and u the cotangent of T. The rows follow from three
facts: B is linear in gO and does not depend on I through gI; the tangent T is DB's d grad_output with
ggI = tI, ggG = tG (sum_k W_k tI_k + sum_k (dW_k/dG . tG) V_k); and DB's d input and d grid are the remaining
terms of B's derivative. A gradient nobody needs is not computed: a Function's forward takes the mask of the
outputs to compute, and returns None for the others.

vmap: each Function folds the vmapped dimension into the batch dimension N, or, where no result is shaped like
the input and every input-shaped argument is shared (``in_dims=None`` for a feature grid), into the points, so
that a shared feature grid is never copied.
"""
import torch

from .reference import double_backward_reference, grid_sample_reference

_ops = torch.ops.grid_encoder
# The operators' settings: mode and padding as these names' indices (torch's numbering), then align_corners.
MODE_NAMES = ("bilinear", "nearest", "bicubic")
PADDING_NAMES = ("zeros", "border", "reflection")


def _reference_settings(settings):
    mode, padding, align_corners = settings
    return MODE_NAMES[mode], PADDING_NAMES[padding], align_corners


def _add(a, b):
    """a + b, where None is zero."""
    if a is None:
        return b
    return a if b is None else a + b


def _zeros_if_none(t, like):
    return torch.zeros_like(like) if t is None else t


def _save(ctx, *tensors):
    """Keeps a Function's tensors for its backward and its jvp; gradients nobody sends arrive as None."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)
    ctx.set_materialize_grads(False)


def _wanted(mask, results):
    """The results whose mask entry is set; None for the others (their placeholders)."""
    return tuple(r if m else None for m, r in zip(mask, results))


def _jvp(function, primals, tangents):
    """function's Jacobian-vector product by two vector-Jacobian products: u -> J^T u is linear in u, and its
    own vjp with the tangents is J tangents. Reverse mode only, so that it also runs inside a forward-mode
    dual level (torch.func.jvp would nest one, which torch refuses)."""
    outputs, vjp = torch.func.vjp(function, *primals)
    _, vjp_of_vjp = torch.func.vjp(vjp, torch.zeros_like(outputs) if torch.is_tensor(outputs)
                                   else tuple(torch.zeros_like(o) for o in outputs))
    return vjp_of_vjp(tuple(tangents))[0]


# -------------------------------------------------------------------------------------------------
# The four operators, called below autograd: a Function's derivatives come from its own methods.

def _forward(input, grid, settings):
    with torch.no_grad():
        return _ops.grid_sample_forward(input, grid, *settings)


def _backward(grad_output, input, grid, settings, mask):
    if not any(mask):
        return None, None
    with torch.no_grad():
        return _wanted(mask, _ops.grid_sample_backward(grad_output, input, grid, *settings, list(mask)))


def _double_backward(grad_grad_input, grad_grad_grid, grad_output, input, grid, settings, mask):
    if not any(mask) or (grad_grad_input is None and grad_grad_grid is None):
        return None, None, None
    with torch.no_grad():
        return _wanted(mask, _ops.grid_sample_double_backward(grad_grad_input, grad_grad_grid, grad_output, input,
                                                              grid, *settings, list(mask)))


def _tangent(input_tangent, grid_tangent, input, grid, settings):
    with torch.no_grad():
        return _ops.grid_sample_tangent(input_tangent, grid_tangent, input, grid, *settings)


# -------------------------------------------------------------------------------------------------
# vmap: fold the vmapped dimension into N or into the points, run the Function once, unfold.
# Tensor roles: IMAGE (N, C, *spatial), like input; VALUES (N, C, *points), like the output; GRID
# (N, *points, dims), like grid.

IMAGE, VALUES, GRID = "image", "values", "grid"
_POINTS_DIM = {VALUES: 2, GRID: 1}  # where a role's points start


def _fold_into_points(tensors, roles, in_dims, image_outputs):
    """Whether the vmapped dimension can join the points: no result is input-shaped and no input-shaped
    argument is batched."""
    return not image_outputs and all(
        t is None or role != IMAGE or dim is None for t, role, dim in zip(tensors, roles, in_dims))


def _fold(tensors, roles, in_dims, batch_size, into_points):
    """The tensors with the vmapped dimension merged (sizes spelled out: -1 is ambiguous for empty tensors)."""
    folded = []
    for t, role, dim in zip(tensors, roles, in_dims):
        if t is None or (into_points and role == IMAGE):
            folded.append(t)
            continue
        t = t.unsqueeze(0).expand(batch_size, *t.shape) if dim is None else t.movedim(dim, 0)
        if into_points:  # (B, N, ..., P0, ...) -> (N, ..., B * P0, ...)
            first = _POINTS_DIM[role]
            t = t.movedim(0, first)
            t = t.reshape(*t.shape[:first], t.shape[first] * t.shape[first + 1], *t.shape[first + 2:])
        else:  # (B, N, ...) -> (B * N, ...)
            t = t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])
        folded.append(t)
    return folded


def _unfold(results, roles, batch_size, into_points):
    unfolded, out_dims = [], []
    for t, role in zip(results, roles):
        if t is None:
            unfolded.append(None)
            out_dims.append(None)
        elif into_points:
            first = _POINTS_DIM[role]
            unfolded.append(t.reshape(*t.shape[:first], batch_size, t.shape[first] // batch_size,
                                      *t.shape[first + 1:]))
            out_dims.append(first)
        else:
            unfolded.append(t.reshape(batch_size, t.shape[0] // batch_size, *t.shape[1:]))
            out_dims.append(0)
    return tuple(unfolded), tuple(out_dims)


def _vmap(function, info, in_dims, tensors, roles, extra, result_roles, image_outputs):
    """Applies function(*folded tensors, *extra) once over the whole vmapped batch."""
    tensor_dims = in_dims[:len(tensors)]
    into_points = _fold_into_points(tensors, roles, tensor_dims, image_outputs)
    folded = _fold(tensors, roles, tensor_dims, info.batch_size, into_points)
    results = function.apply(*folded, *extra)
    single = not isinstance(results, tuple)
    results, out_dims = _unfold((results,) if single else results, result_roles, info.batch_size, into_points)
    return (results[0], out_dims[0]) if single else (results, out_dims)


# -------------------------------------------------------------------------------------------------

class Sample(torch.autograd.Function):
    """out = F(input, grid)."""

    @staticmethod
    def forward(input, grid, settings):
        return _forward(input, grid, settings)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, grid, ctx.settings = inputs
        _save(ctx, input, grid)

    @staticmethod
    def backward(ctx, grad_output):
        if grad_output is None:
            return None, None, None
        input, grid = ctx.saved_tensors
        grad_input, grad_grid = SampleBackward.apply(grad_output, input, grid, ctx.settings,
                                                     tuple(ctx.needs_input_grad[:2]))
        return grad_input, grad_grid, None

    @staticmethod
    def jvp(ctx, input_tangent, grid_tangent, _):
        input, grid = ctx.saved_tensors
        return Tangent.apply(input_tangent, grid_tangent, input, grid, ctx.settings)

    @staticmethod
    def vmap(info, in_dims, input, grid, settings):
        return _vmap(Sample, info, in_dims, (input, grid), (IMAGE, GRID), (settings,), (VALUES,), False)


class SampleBackward(torch.autograd.Function):
    """(grad_input, grad_grid) = B(grad_output, input, grid), each only where mask asks for it."""

    @staticmethod
    def forward(grad_output, input, grid, settings, mask):
        return _backward(grad_output, input, grid, settings, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad_output, input, grid, ctx.settings, ctx.mask = inputs
        _save(ctx, grad_output, input, grid)

    @staticmethod
    def backward(ctx, grad_grad_input, grad_grad_grid):
        grad_output, input, grid = ctx.saved_tensors
        d = DoubleBackward.apply(grad_grad_input, grad_grad_grid, grad_output, input, grid, ctx.settings,
                                 tuple(ctx.needs_input_grad[:3]))
        return (*d, None, None)

    @staticmethod
    def jvp(ctx, grad_output_tangent, input_tangent, grid_tangent, _, __):
        # B is linear in grad_output; its derivatives in input and grid are the double backward's d input and
        # d grid with (grad_grad_input, grad_grad_grid) = (input_tangent, grid_tangent).
        grad_output, input, grid = ctx.saved_tensors
        along_grad_output = (None, None)
        if grad_output_tangent is not None:
            along_grad_output = SampleBackward.apply(grad_output_tangent, input, grid, ctx.settings, ctx.mask)
        _, d_input, d_grid = DoubleBackward.apply(input_tangent, grid_tangent, grad_output, input, grid,
                                                  ctx.settings, (False, *ctx.mask))
        return _add(along_grad_output[0], d_input), _add(along_grad_output[1], d_grid)

    @staticmethod
    def vmap(info, in_dims, grad_output, input, grid, settings, mask):
        return _vmap(SampleBackward, info, in_dims, (grad_output, input, grid), (VALUES, IMAGE, GRID),
                     (settings, mask), (IMAGE, GRID), mask[0])


class DoubleBackward(torch.autograd.Function):
    """(d grad_output, d input, d grid) = DB(grad_grad_input, grad_grad_grid, grad_output, input, grid), each only
    where mask asks for it. Its own derivatives, third order and up, are those of the pure-PyTorch twin."""

    @staticmethod
    def forward(grad_grad_input, grad_grad_grid, grad_output, input, grid, settings, mask):
        return _double_backward(grad_grad_input, grad_grad_grid, grad_output, input, grid, settings, mask)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, ctx.settings, ctx.mask = inputs
        _save(ctx, *tensors)

    @staticmethod
    def _primals(ctx):
        grad_grad_input, grad_grad_grid, grad_output, input, grid = ctx.saved_tensors
        return (_zeros_if_none(grad_grad_input, input), _zeros_if_none(grad_grad_grid, grid), grad_output, input,
                grid)

    @staticmethod
    def _reference(ctx):
        settings = _reference_settings(ctx.settings)
        return lambda *tensors: double_backward_reference(*tensors, *settings)

    @staticmethod
    def backward(ctx, *grads):
        primals = DoubleBackward._primals(ctx)
        cotangents = tuple(_zeros_if_none(g if computed else None, like)
                           for g, computed, like in zip(grads, ctx.mask, primals[2:]))
        _, vjp = torch.func.vjp(DoubleBackward._reference(ctx), *primals)
        return (*_wanted(ctx.needs_input_grad[:5], vjp(cotangents)), None, None)

    @staticmethod
    def jvp(ctx, *tangents):
        primals = DoubleBackward._primals(ctx)
        tangents = tuple(_zeros_if_none(t, p) for t, p in zip(tangents[:5], primals))
        return _wanted(ctx.mask, _jvp(DoubleBackward._reference(ctx), primals, tangents))

    @staticmethod
    def vmap(info, in_dims, grad_grad_input, grad_grad_grid, grad_output, input, grid, settings, mask):
        return _vmap(DoubleBackward, info, in_dims, (grad_grad_input, grad_grad_grid, grad_output, input, grid),
                     (IMAGE, GRID, VALUES, IMAGE, GRID), (settings, mask), (VALUES, IMAGE, GRID), mask[1])


class Tangent(torch.autograd.Function):
    """T = dF/d input . input_tangent + dF/d grid . grid_tangent, the output's tangent (None tangents are zero)."""

    @staticmethod
    def forward(input_tangent, grid_tangent, input, grid, settings):
        return _tangent(input_tangent, grid_tangent, input, grid, settings)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, ctx.settings = inputs
        _save(ctx, *tensors)

    @staticmethod
    def backward(ctx, cotangent):
        if cotangent is None:
            return None, None, None, None, None
        input_tangent, grid_tangent, input, grid = ctx.saved_tensors
        need = ctx.needs_input_grad
        # T is linear in the tangents, with B as its transpose; its derivatives in input and grid are the
        # double backward's d input and d grid for (grad_grad_input, grad_grad_grid) = the tangents.
        d_input_tangent, d_grid_tangent = SampleBackward.apply(cotangent, input, grid, ctx.settings,
                                                               (need[0], need[1]))
        _, d_input, d_grid = DoubleBackward.apply(input_tangent, grid_tangent, cotangent, input, grid,
                                                  ctx.settings, (False, need[2], need[3]))
        return d_input_tangent, d_grid_tangent, d_input, d_grid, None

    @staticmethod
    def jvp(ctx, *tangents):
        primals = ctx.saved_tensors
        primals = (_zeros_if_none(primals[0], primals[2]), _zeros_if_none(primals[1], primals[3]), *primals[2:])
        tangents = tuple(_zeros_if_none(t, p) for t, p in zip(tangents[:4], primals))
        settings = _reference_settings(ctx.settings)

        def tangent_reference(input_tangent, grid_tangent, input, grid):
            return _jvp(lambda i, g: grid_sample_reference(i, g, *settings), (input, grid),
                        (input_tangent, grid_tangent))

        return _jvp(tangent_reference, primals, tangents)

    @staticmethod
    def vmap(info, in_dims, input_tangent, grid_tangent, input, grid, settings):
        return _vmap(Tangent, info, in_dims, (input_tangent, grid_tangent, input, grid), (IMAGE, GRID, IMAGE, GRID),
                     (settings,), (VALUES,), False)

