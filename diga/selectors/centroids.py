"""Class centroids in feature space: the bank DiGA's dynamic selection measures against."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from diga import _dist
from diga._checks import (
    check_finite,
    check_floating,
    check_labels,
    check_ndim,
    check_nonempty,
    check_number,
    check_same_batch,
    value_checks,
)
from diga._ops import class_argmax, constant, count_values, resize_labels
from diga.data.batch import as_batch, batch_images

__all__ = ["ClassCentroids", "init_centroids"]


def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _no_autocast(device: torch.device):
    return torch.autocast(device_type=device.type, enabled=False)


class ClassCentroids(nn.Module):
    """A ``(C, D)`` bank of class centroids, with running-mean initialisation and EMA updates.

    * ``accumulate`` + ``finalize``: the initial pass. Sums and counts of the
      features of every pixel assigned to a class are added up (pixel-weighted
      running mean), reduced across ranks once in ``finalize`` and divided.
    * ``update``: one EMA step per call, ``c <- (1 - momentum) c + momentum m``,
      where ``m`` is the class mean over this batch (all ranks together);
      classes with fewer than ``min_pixels`` pixels in the batch are left alone.
    * ``distances`` / ``nearest`` / ``weights``: L2 distance of each feature to
      each centroid, the nearest class, and ``softmax(-distance)`` over classes.

    A pixel is assigned to class ``k`` when its label (resized to the feature
    grid by nearest neighbour; label values are validated there) is ``k``, and, when ``logits`` are given, the
    prediction ``argmax(logits)`` (taken at the logits' resolution, then resized
    by nearest neighbour) is ``k`` too, as in the paper's
    ``calculate_mean_vector``. With no labels the prediction alone assigns.

    Deliberate differences from the paper's ``Class_Features``, each for
    correctness under more than one process: the paper applies one EMA step per
    (image, class) vector in sequence (to first order ``momentum`` times the
    number of images per step) where we apply one per class with the batch
    mean; its initial pass is a running mean of per-image means capped at 3000
    images, ours the pixel-weighted mean; it skips (image, class) pairs under 5
    pixels, we skip classes under ``min_pixels`` in the batch. A class that has
    never been seen has no centroid (``initialized`` is False): it is never
    nearest and its first ``update`` sets it (the paper keeps a zero vector).

    Args:
        num_classes: ``C``.
        feature_dim: feature dimension ``D`` (a wrapped model's ``feature_dim``).
        momentum: EMA weight of the new batch mean (paper: 1e-4).
        ignore_index: label value that is never a class.
        min_pixels: fewest pixels of a class in a batch for ``update`` to move it.

    Buffers:
        ``centroids`` ``(C, D)`` float32; ``initialized`` ``(C,)`` bool; the
        initial pass's running sums and counts, so a half-done pass resumes; and
        ``pixel_counts`` ``(C,)``, the pixels per class of the last finished pass
        (the class shares a collapse is measured against).

    Example:
        >>> bank = ClassCentroids(num_classes=3, feature_dim=2)
        >>> feats = torch.tensor([[[[0., 1.]], [[0., 1.]]]])        # (1, 2, 1, 2)
        >>> bank.accumulate(feats, labels=torch.tensor([[[0, 2]]]))
        >>> bank.finalize()
        tensor([[0., 0.],
                [0., 0.],
                [1., 1.]])
        >>> bank.initialized.tolist()
        [True, False, True]
        >>> bank.nearest(torch.full((1, 2, 1, 1), 0.9)).tolist()
        [[[2]]]
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        *,
        momentum: float = 1e-4,
        ignore_index: int = 255,
        min_pixels: int = 5,
    ) -> None:
        super().__init__()
        check_number(num_classes, "num_classes", low=1, integer=True)
        check_number(feature_dim, "feature_dim", low=1, integer=True)
        check_number(momentum, "momentum", low=0, high=1)
        check_number(ignore_index, "ignore_index", integer=True)
        check_number(min_pixels, "min_pixels", low=1, integer=True)
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"`ignore_index` must not be a class index in [0, {num_classes}), got {ignore_index}"
            )
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.momentum = float(momentum)
        self.ignore_index = int(ignore_index)
        self.min_pixels = int(min_pixels)
        self.register_buffer("centroids", torch.zeros(num_classes, feature_dim))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))
        self.register_buffer("running_sum", torch.zeros(num_classes, feature_dim, dtype=torch.float64))
        self.register_buffer("running_count", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("pixel_counts", torch.zeros(num_classes, dtype=torch.float64))

    @classmethod
    def from_tensor(
        cls,
        centroids: Tensor,
        *,
        momentum: float = 1e-4,
        ignore_index: int = 255,
        min_pixels: int = 5,
    ) -> ClassCentroids:
        """A bank holding the given ``(C, D)`` centroids, every class initialised.

        Example:
            >>> ClassCentroids.from_tensor(torch.eye(3)).centroids.shape
            torch.Size([3, 3])
        """
        check_ndim(centroids, "centroids", 2, "(C, D)")
        check_floating(centroids, "centroids")
        check_nonempty(centroids, "centroids")
        check_finite(centroids, "centroids")
        bank = cls(
            centroids.shape[0], centroids.shape[1], momentum=momentum,
            ignore_index=ignore_index, min_pixels=min_pixels,
        ).to(centroids.device)
        bank.centroids.copy_(centroids.detach())
        bank.initialized.fill_(True)
        return bank

    # ----------------------------------------------------------------- inputs
    def _check_features(self, features: Tensor, name: str = "features") -> Tensor:
        check_ndim(features, name, 4, "(B, D, h, w)")
        check_floating(features, name)
        check_nonempty(features, name)
        if features.shape[1] != self.feature_dim:
            raise ValueError(
                f"`{name}` must have D = {self.feature_dim} channels, got shape {tuple(features.shape)}"
            )
        # Finiteness is checked on the (much smaller) results features flow into: a NaN or inf
        # feature makes its class sums and its distances non-finite.
        return features

    def assign(
        self, features: Tensor, labels: Tensor | None = None, logits: Tensor | None = None
    ) -> Tensor:
        """Class of each feature pixel, ``(B, h, w)`` int64; ``num_classes`` where unassigned.

        Example:
            >>> bank = ClassCentroids(2, 4)
            >>> bank.assign(torch.zeros(1, 4, 2, 2), labels=torch.tensor([[[0, 1], [255, 1]]]))
            tensor([[[0, 1],
                     [2, 1]]])
        """
        self._check_features(features)
        if labels is None and logits is None:
            raise ValueError("`labels` and `logits` cannot both be None: pass at least one")
        size = tuple(features.shape[-2:])
        cls = None
        if labels is not None:
            with value_checks(False):  # shape and dtype; the values on the grid they are used at
                check_labels(labels, "labels", num_classes=self.num_classes, ignore_index=self.ignore_index)
            check_same_batch(features, labels, "features", "labels")
            lab = resize_labels(labels, size)
            check_labels(lab, "labels", num_classes=self.num_classes, ignore_index=self.ignore_index)
            if self.ignore_index >= self.num_classes:  # classes and the ignore value: one clamp
                cls = lab.clamp_max(self.num_classes)
            else:
                cls = torch.where(lab == self.ignore_index, constant(self.num_classes, lab.dtype, lab.device), lab)
        if logits is not None:
            check_ndim(logits, "logits", 4, "(B, C, h, w)")
            check_same_batch(features, logits, "features", "logits")
            if logits.shape[1] != self.num_classes:
                raise ValueError(
                    f"`logits` must have C = {self.num_classes} channels, got shape {tuple(logits.shape)}"
                )
            pred = resize_labels(class_argmax(logits), size)
            if cls is None:
                cls = pred
            else:
                cls = torch.where(cls == pred, cls, constant(self.num_classes, cls.dtype, cls.device))
        return cls

    def _class_sums(self, features: Tensor, cls: Tensor, groups: int = 1) -> tuple[Tensor, Tensor]:
        """Per-class feature sums ``(C, D)`` and pixel counts ``(C,)`` (float, accumulation dtype);
        ``(G, C, D)`` and ``(G, C)`` over ``groups`` equal chunks of the batch.

        One-hot batched matmul when the features are wider than the class count (a
        ``(B, N, C+1)`` one-hot is then smaller than the features); otherwise an
        ``index_add_`` over the features laid out ``(N, D)``.
        """
        b, d = features.shape[:2]
        dtype = _acc_dtype(features)
        slots = self.num_classes + 1
        idx = cls.reshape(groups, -1)
        if groups > 1:  # each chunk its own slots
            idx = idx + torch.arange(0, groups * slots, slots, device=idx.device)[:, None]
        counts = count_values(idx, groups * slots).view(groups, slots)[:, : self.num_classes].to(dtype)
        with _no_autocast(features.device):
            if d > slots:
                onehot = features.new_zeros(b, idx.numel() // b, slots, dtype=dtype)
                onehot.scatter_(2, cls.reshape(b, -1, 1), 1.0)  # (B, N, C+1), the size of one logits map
                flat = features.reshape(b, d, -1).to(dtype)  # (B, D, N)
                sums = torch.bmm(flat, onehot).view(groups, b // groups, d, slots).sum(dim=1)  # (G, D, C+1)
                sums = sums.transpose(1, 2)[:, : self.num_classes]  # (G, C, D)
            else:
                flat = features.permute(0, 2, 3, 1).reshape(-1, d).to(dtype)  # (N, D)
                sums = flat.new_zeros(groups * slots, d).index_add_(0, idx.reshape(-1), flat)
                sums = sums.view(groups, slots, d)[:, : self.num_classes]
        return (sums[0], counts[0]) if groups == 1 else (sums, counts)

    # --------------------------------------------------------- initial pass
    @torch.no_grad()
    def accumulate(
        self, features: Tensor, labels: Tensor | None = None, logits: Tensor | None = None
    ) -> None:
        """Add a batch to the initial pass's running sums (local; reduced in :meth:`finalize`).

        Args:
            features: ``(B, D, h, w)``.
            labels: ``(B, H, W)`` int64 class indices or ``ignore_index``; optional.
            logits: ``(B, C, h', w')`` predictions; optional. At least one of the two.
        """
        cls = self.assign(features, labels, logits)
        sums, counts = self._class_sums(features, cls)
        check_finite(sums, "features")
        self.running_sum.add_(sums.to(self.running_sum.dtype))
        self.running_count.add_(counts.to(self.running_count.dtype))

    @torch.no_grad()
    def finalize(self) -> Tensor:
        """Reduce the running sums across ranks, set every seen class's centroid, reset the sums.

        Classes no pixel reached keep their previous centroid and ``initialized`` state. The
        reduced per-class pixel counts of the pass are kept in ``pixel_counts`` ``(C,)``.
        Every rank must call it (it is a collective under ``torch.distributed``).

        Returns:
            The ``(C, D)`` centroids.
        """
        _dist.all_reduce_sum_(self.running_sum, self.running_count)
        self.pixel_counts.copy_(self.running_count)  # all ranks together
        seen = self.running_count > 0
        mean = self.running_sum / self.running_count.clamp_min(1)[:, None]
        self.centroids.copy_(torch.where(seen[:, None], mean.to(self.centroids.dtype), self.centroids))
        self.initialized |= seen
        self.reset_running()
        return self.centroids

    @torch.no_grad()
    def reset_running(self) -> None:
        """Forget a half-done initial pass."""
        self.running_sum.zero_()
        self.running_count.zero_()

    # ------------------------------------------------------------ EMA step
    @torch.no_grad()
    def update(
        self, features: Tensor, labels: Tensor | None = None, logits: Tensor | None = None, *,
        steps: int = 1, order: Sequence[int] | None = None,
    ) -> Tensor:
        """One EMA step towards this batch's class means (all ranks' pixels together).

        Args:
            features: ``(B, D, h, w)`` (the teacher's, in DiGA).
            labels: ``(B, H, W)`` labels or selected pseudo-labels; optional.
            logits: ``(B, C, h', w')``; where given, only pixels whose
                prediction agrees with the label count.
            steps: the batch is this many batches of ``B / steps`` images (its first images,
                then the next ...), each one EMA step, as that many calls would make: the
                class sums of all of them in one pass.
            order: the order of those steps, as chunk indices (default: first to last).

        Returns:
            ``(C,)`` bool, the classes that moved (``(steps, C)`` for ``steps > 1``, by chunk).

        Example:
            >>> bank = ClassCentroids.from_tensor(torch.zeros(2, 1), momentum=0.5, min_pixels=1)
            >>> bank.update(torch.ones(1, 1, 1, 2), labels=torch.tensor([[[1, 1]]])).tolist()
            [False, True]
            >>> bank.centroids.flatten().tolist()
            [0.0, 0.5]
            >>> feats = torch.tensor([[[[2., 2.]]], [[[4., 4.]]]])  # two batches of one image
            >>> bank.update(feats, labels=torch.ones(2, 1, 2, dtype=torch.long), steps=2, order=(1, 0)).tolist()
            [[False, True], [False, True]]
            >>> bank.centroids.flatten().tolist()  # 0.5 -> 2.25 (the second batch first) -> 2.125
            [0.0, 2.125]
        """
        check_number(steps, "steps", low=1, integer=True)
        order = tuple(range(steps)) if order is None else tuple(order)
        if sorted(order) != list(range(steps)):
            raise ValueError(f"`order` must be a permutation of range({steps}), got {order}")
        if isinstance(features, Tensor) and features.ndim and features.shape[0] % steps:
            raise ValueError(f"`features` must hold `steps` = {steps} batches of equal size, "
                             f"got a batch of {features.shape[0]}")
        cls = self.assign(features, labels, logits)
        sums, counts = self._class_sums(features, cls, steps)
        check_finite(sums, "features")
        _dist.all_reduce_sum_(sums, counts)
        moved = counts >= self.min_pixels
        mean = (sums / counts.clamp_min(1)[..., None]).to(self.centroids.dtype)
        if steps == 1:
            moved, mean = moved[None], mean[None]
        centroids, initialized = self.centroids, self.initialized
        for i, k in enumerate(order):  # a few EMA steps of the (C, D) bank, in order
            ema = torch.where(initialized[:, None], torch.lerp(centroids, mean[k], self.momentum), mean[k])
            centroids = torch.where(moved[k, :, None], ema, centroids)
            if i < steps - 1:
                initialized = initialized | moved[k]
        self.centroids.copy_(centroids)
        if steps == 1:
            self.initialized |= moved[0]
            return moved[0]
        self.initialized.copy_(initialized | moved[order[-1]])
        return moved

    # --------------------------------------------------------- measuring
    def _excluded(self, device: torch.device) -> Tensor:
        """``(C,)`` bool: classes with no centroid yet, left out of weights and nearest (unless
        no class has one)."""
        seen = self.initialized.to(device)
        return ~seen & seen.any()

    def _flat(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Checked features as ``(B, D, h * w)`` and the ``(C, D)`` centroids, both in the
        accumulation dtype on the features' device."""
        self._check_features(features)
        dtype = _acc_dtype(features)
        f = features.reshape(*features.shape[:2], -1).to(dtype)
        return f, self.centroids.to(device=features.device, dtype=dtype)

    def _sq_distances(self, features: Tensor) -> Tensor:
        """Squared L2 distances ``(B, C, h, w)`` in the accumulation dtype, by ``|f|^2 - 2fc + |c|^2``."""
        f, c = self._flat(features)
        with _no_autocast(features.device):
            cross = torch.einsum("cd,bdn->bcn", c, f)
            sq = (f * f).sum(dim=1, keepdim=True) - 2 * cross + (c * c).sum(dim=1)[None, :, None]
        check_finite(sq, "features")
        return sq.clamp_min_(0).reshape(features.shape[0], self.num_classes, *features.shape[-2:])

    def distances(self, features: Tensor) -> Tensor:
        """L2 distance of every feature to every centroid.

        Args:
            features: ``(B, D, h, w)``.

        Returns:
            ``(B, C, h, w)`` in the features' dtype (computed in float32).

        Example:
            >>> bank = ClassCentroids.from_tensor(torch.tensor([[0., 0.], [3., 4.]]))
            >>> bank.distances(torch.zeros(1, 2, 1, 1)).flatten().tolist()
            [0.0, 5.0]
        """
        return self._sq_distances(features).sqrt_().to(features.dtype)

    def weights(self, features: Tensor) -> Tensor:
        """``softmax(-distance)`` over classes, ``(B, C, h, w)`` float32 (float64 for float64 input).

        Classes with no centroid yet get weight 0 (while at least one class has one).
        """
        neg = self._sq_distances(features).sqrt_().neg_()  # a temporary of ours: in place
        excluded = self._excluded(neg.device)[None, :, None, None]
        return torch.softmax(neg.masked_fill_(excluded, float("-inf")), dim=1)

    def nearest(self, features: Tensor) -> Tensor:
        """Class of the nearest centroid, ``(B, h, w)`` int64 (classes with no centroid excluded).

        The first class minimising ``|c|^2 - 2 f.c``: the squared distance less the ``|f|^2``
        every class shares, so no per-pixel norm, square root or softmax is computed (the
        argmax of :meth:`weights` wherever two classes are not tied to float rounding).

        Example:
            >>> bank = ClassCentroids.from_tensor(torch.tensor([[0., 0.], [3., 4.]]))
            >>> bank.nearest(torch.tensor([[[[0.]], [[1.]]], [[[3.]], [[3.]]]])).flatten().tolist()
            [0, 1]
        """
        f, c = self._flat(features)
        with _no_autocast(f.device):
            bias = (c * c).sum(dim=1).masked_fill(self._excluded(f.device), float("inf"))
            score = torch.baddbmm(bias[:, None], c.expand(f.shape[0], -1, -1), f, alpha=-2)  # (B, C, N)
            best = score.min(dim=1)
        # A NaN or inf feature leaves its pixel's best score non-finite: one small check.
        check_finite(best.values, "features")
        return best.indices.reshape(features.shape[0], *features.shape[-2:])

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, feature_dim={self.feature_dim}, momentum={self.momentum}, "
            f"ignore_index={self.ignore_index}, min_pixels={self.min_pixels}"
        )


@torch.no_grad()
def init_centroids(
    centroids: ClassCentroids,
    model: nn.Module,
    batches: Iterable[Any],
    *,
    use_labels: bool = False,
    max_batches: int | None = None,
    progress: bool = False,
) -> Tensor:
    """Stage 3: set ``centroids`` from one pass of ``model`` over ``batches`` (the paper: the target set).

    Each pixel counts for the class ``model`` predicts there (with ``use_labels``,
    only where the batch's labels agree: source centroids). The model runs in eval
    mode and gets its mode back after. Under ``torch.distributed`` each rank passes
    its shard and the sums are reduced once at the end (:meth:`ClassCentroids.finalize`).

    Args:
        centroids: the bank to set (its running sums are reset first).
        model: returns ``(logits, features)`` for ``(B, 3, H, W)`` images, as
            :func:`~diga.models.with_features` models do.
        batches: iterable of image tensors, ``(images, labels, ...)`` tuples or dicts
            with ``"image"`` (and ``"label"``): a ``DataLoader`` over a diga dataset.
        use_labels: also require the batch's labels to agree.
        max_batches: stop after this many batches.
        progress: show a tqdm bar.

    Returns:
        The ``(C, D)`` centroids.

    Example:
        >>> from diga.models import with_features
        >>> import segmentation_models_pytorch as smp
        >>> net = with_features(smp.Unet("resnet18", encoder_weights=None, classes=3, encoder_depth=3,
        ...                              decoder_channels=(16, 8, 8)))
        >>> bank = ClassCentroids(3, net.feature_dim)
        >>> init_centroids(bank, net, [torch.rand(2, 3, 32, 32)]).shape
        torch.Size([3, 8])
    """
    if max_batches is not None:
        check_number(max_batches, "max_batches", low=1, integer=True)
    was_training = model.training
    model.eval()
    centroids.reset_running()
    device = centroids.centroids.device
    try:
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="centroids", total=max_batches, leave=False)
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            logits, feats = model(batch_images(batch).to(device))
            labels = None
            if use_labels:
                labels = as_batch(batch).get("label")
                if labels is None:
                    raise ValueError("`use_labels=True` needs labelled batches ((images, labels) or a 'label' "
                                     f"entry), got {type(batch).__name__} without labels")
                labels = labels.to(device)
            centroids.accumulate(feats, labels=labels, logits=logits)
    finally:
        model.train(was_training)
    return centroids.finalize()
