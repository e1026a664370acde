"""Domain labels, one convention for every place that picks a target: training, the image grid, evaluation and
``evaluate.py translate``.

Single-label data (one domain per image): a label is an int64 index; G takes it one-hot.

Multi-label data (CelebA attributes): a label is a float 0/1 vector over the attributes. Translating an image into
attribute ``d`` *sets* d, *clears* the other members of d's exclusive group (CelebA's hair colours by default:
an image has one hair colour), and keeps every other attribute of the image. So "to Blond_Hair" turns a
black-haired young man into a blond young man, never into a label set that the training data cannot contain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from gan.errors import UserError


@dataclass(frozen=True)
class LabelSpace:
    """The domains of a dataset and how labels are turned into G's conditioning vectors and target labels."""

    domains: tuple[str, ...]
    multi_label: bool
    groups: tuple[tuple[int, ...], ...] = ()  # indices of mutually exclusive attributes (multi-label only)

    @classmethod
    def create(
        cls, domains: Sequence[str], multi_label: bool, exclusive_groups: Sequence[Sequence[str]] = ()
    ) -> LabelSpace:
        """Groups are given by attribute name; names that are not among ``domains`` are ignored (the default group
        names all four CelebA hair colours, whichever of them a run selects), and a group left with fewer than two
        members constrains nothing. An attribute in two groups is a ValueError."""
        names = list(domains)
        groups: list[tuple[int, ...]] = []
        seen: set[int] = set()
        if multi_label:
            for group in exclusive_groups:
                members = tuple(sorted({names.index(n) for n in group if n in names}))
                if len(members) < 2:
                    continue
                twice = seen.intersection(members)
                if twice:
                    raise ValueError(f"attribute {names[min(twice)]!r} is in more than one exclusive group")
                seen.update(members)
                groups.append(members)
        return cls(tuple(names), multi_label, tuple(groups))

    @property
    def num_domains(self) -> int:
        return len(self.domains)

    def vectors(self, labels: Tensor) -> Tensor:
        """Labels as the float vectors G takes: one-hot for single-label data, the 0/1 vector for multi-label."""
        if self.multi_label:
            return labels.float()
        return F.one_hot(labels, self.num_domains).float()

    def contains(self, labels: Tensor, domain: int) -> Tensor:
        """Boolean mask of the images that belong to ``domain`` (have attribute ``domain``, for multi-label)."""
        return labels[:, domain] > 0.5 if self.multi_label else labels == domain

    def group_of(self, domain: int) -> tuple[int, ...]:
        """The exclusive group ``domain`` belongs to (just itself when it is in none)."""
        return next((g for g in self.groups if domain in g), (domain,))

    def toward(self, labels: Tensor, domain: int) -> Tensor:
        """Target labels for translating images with ``labels`` into ``domain`` (see the module docstring)."""
        if not self.multi_label:
            return torch.full_like(labels, domain)
        out = labels.clone().float()
        out[:, list(self.group_of(domain))] = 0.0
        out[:, domain] = 1.0
        return out

    def grid_targets(self, labels: Tensor) -> list[Tensor]:
        """One target batch per column of the translation grid: every domain in turn, by :meth:`toward`."""
        return [self.toward(labels, d) for d in range(self.num_domains)]

    def shuffled(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """StarGAN's training targets: the batch's own labels in a random order (always label sets that occur)."""
        order = torch.randperm(labels.size(0), generator=generator, device="cpu" if generator else labels.device)
        return labels[order.to(labels.device)]

    def parse(self, spec: str, source: Tensor | None = None) -> Tensor:
        """The target label of ``--to`` text: a domain name, or for multi-label data a comma-separated list of
        attributes to set, applied with :meth:`toward` to ``source`` (the input's own 0/1 attributes); an attribute
        written ``no-NAME`` is cleared instead (``--to no-Male``, ``--to Blond_Hair,no-Young``)."""
        names = [name.strip() for name in spec.split(",") if name.strip()]
        cleared = [name[3:] for name in names if name.startswith("no-")] if self.multi_label else []
        names = [name for name in names if not (self.multi_label and name.startswith("no-"))]
        unknown = [name for name in names + cleared if name not in self.domains]
        if self.multi_label and not names and cleared and not unknown:
            return self._cleared(source, cleared)
        if unknown or not names:
            bad = unknown[0] if unknown else spec
            raise UserError(f"--to {spec}: unknown domain {bad!r}; known: {', '.join(self.domains)}")
        if not self.multi_label:
            if len(names) != 1:
                raise UserError(f"--to {spec}: this model's domains are exclusive; name exactly one")
            return torch.tensor(self.domains.index(names[0]))
        indices = [self.domains.index(name) for name in names]
        for group in self.groups:
            clash = [self.domains[i] for i in indices if i in group]
            if len(clash) > 1:
                raise UserError(f"--to {spec}: {' and '.join(clash)} are mutually exclusive; name one of them")
        label = self._cleared(source, cleared).reshape(1, -1)
        for index in indices:
            label = self.toward(label, index)
        return label[0]

    def _cleared(self, source: Tensor | None, cleared: list[str]) -> Tensor:
        if source is None:
            raise ValueError("multi-label targets need the source image's attributes")
        label = source.float().clone().reshape(-1)
        for name in cleared:
            label[self.domains.index(name)] = 0.0
        return label

    def one_per_group(self, scores: Tensor) -> Tensor:
        """0/1 attributes from per-attribute scores (logits): positive ones present, but within an exclusive group
        only the highest-scoring one (a classifier may find two hair colours likely; an image has one)."""
        present = (scores > 0).float()
        for group in self.groups:
            members = list(group)
            best = members[int(scores[..., members].argmax())]
            keep = present[..., best].clone()
            present[..., members] = 0.0
            present[..., best] = keep
        return present

    def parse_attributes(self, spec: str) -> Tensor:
        """A 0/1 attribute vector from a comma-separated list of the attributes an image has ('' or 'none': none)."""
        names = [] if spec.strip().lower() in ("", "none") else [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [name for name in names if name not in self.domains]
        if unknown:
            raise UserError(f"--labels {spec}: unknown attribute {unknown[0]!r}; known: {', '.join(self.domains)}")
        for group in self.groups:
            clash = [n for n in names if self.domains.index(n) in group]
            if len(clash) > 1:
                raise UserError(f"--labels {spec}: {' and '.join(clash)} are mutually exclusive; name one of them")
        vec = torch.zeros(self.num_domains)
        for name in names:
            vec[self.domains.index(name)] = 1.0
        return vec
