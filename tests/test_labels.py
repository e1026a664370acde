"""gan/labels.py: one label convention for training targets, the grid, evaluation and translate."""

import pytest
import torch

from gan.errors import UserError
from gan.labels import LabelSpace

CELEBA = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
HAIR = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]


@pytest.mark.parametrize(
    "labels, domain, multi_label, mask, target",
    [
        (torch.tensor([0, 2, 1, 2, 0]), 2, False, [False, True, False, True, False], torch.tensor([2, 2, 2, 2, 2])),
        (torch.tensor([0, 2, 1, 2, 0]), 0, False, [True, False, False, False, True], torch.tensor([0, 0, 0, 0, 0])),
        (torch.tensor([1]), 1, False, [True], torch.tensor([1])),
        (
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
            1,
            True,
            [False, False, True],
            torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0]]),
        ),
        (
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]]),
            2,
            True,
            [True, False, True],
            torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]]),
        ),
    ],
)
def test_contains_and_toward_without_groups(labels, domain, multi_label, mask, target):
    """Moved from test_evaluation (in_domain / target_labels): without exclusive groups, translating into d sets d
    and keeps the rest."""
    space = LabelSpace.create(["a", "b", "c"], multi_label)
    before = labels.clone()
    assert torch.equal(space.contains(labels, domain), torch.tensor(mask))
    out = space.toward(labels, domain)
    assert out.dtype == (torch.float32 if multi_label else torch.int64)
    assert torch.equal(out, target)
    assert torch.equal(labels, before)  # the input is not modified
    assert out.data_ptr() != labels.data_ptr()


def test_grid_targets():
    """Moved from test_trainer. Single-label: each domain in turn. Multi-label: each attribute *set* (its exclusive
    group cleared), every other attribute kept. The 'Male' column of a male input is therefore the input's own label
    (the old grid flipped non-hair attributes; evaluation and translate set them: now all three agree)."""
    single = LabelSpace.create(["a", "b", "c"], False)
    assert [t.tolist() for t in single.grid_targets(torch.tensor([0, 2]))] == [[0, 0], [1, 1], [2, 2]]
    names = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male"]
    multi = LabelSpace.create(names, True, [HAIR])
    targets = [t.tolist()[0] for t in multi.grid_targets(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))]
    assert targets == [[1, 0, 0, 1], [0, 1, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1]]
    woman = [t.tolist()[0] for t in multi.grid_targets(torch.tensor([[0.0, 0.0, 1.0, 0.0]]))]
    assert woman == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]


def test_groups_keep_label_sets_valid():
    space = LabelSpace.create(CELEBA, True, [HAIR])
    assert space.groups == ((0, 1, 2),)  # Gray_Hair is not among the attributes: ignored
    labels = torch.tensor([[1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    out = space.toward(labels, 1)
    assert out.tolist() == [[0, 1, 0, 1, 1], [0, 1, 0, 0, 0]]  # one hair colour at most, the rest kept
    assert (space.toward(labels, 3)[:, :3] == labels[:, :3]).all()  # Male is in no group: hair untouched
    assert LabelSpace.create(CELEBA, True, [["Black_Hair"]]).groups == ()  # one member constrains nothing
    assert LabelSpace.create(["a", "b"], False, [["a", "b"]]).groups == ()  # single-label: no groups
    with pytest.raises(ValueError, match="more than one exclusive group"):
        LabelSpace.create(CELEBA, True, [["Black_Hair", "Male"], ["Male", "Young"]])


def test_vectors_and_shuffled_targets():
    single = LabelSpace.create(["a", "b", "c"], False)
    assert single.vectors(torch.tensor([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    multi = LabelSpace.create(["a", "b"], True)
    assert multi.vectors(torch.tensor([[1, 0]])).dtype == torch.float32
    labels = torch.arange(8)
    torch.manual_seed(3)
    shuffled = single.shuffled(labels)
    torch.manual_seed(3)
    assert torch.equal(shuffled, labels[torch.randperm(8)])  # StarGAN: the batch's labels, permuted (global RNG)


def test_parse_translate_targets():
    single = LabelSpace.create(["a", "b", "c"], False)
    assert int(single.parse("b")) == 1
    with pytest.raises(UserError, match="unknown domain 'z'; known: a, b, c"):
        single.parse("z")
    with pytest.raises(UserError, match="exclusive; name exactly one"):
        single.parse("a,b")
    multi = LabelSpace.create(CELEBA, True, [HAIR])
    young_black_man = multi.parse_attributes("Black_Hair,Male,Young")
    assert multi.parse("Blond_Hair", young_black_man).tolist() == [0, 1, 0, 1, 1]  # not an old woman
    assert multi.parse("Blond_Hair", multi.parse_attributes("none")).tolist() == [0, 1, 0, 0, 0]
    with pytest.raises(UserError, match="mutually exclusive"):
        multi.parse("Blond_Hair,Brown_Hair", young_black_man)
    with pytest.raises(UserError, match="unknown attribute 'Bald'"):
        multi.parse_attributes("Bald")


def test_clearing_attributes_and_one_attribute_per_group():
    space = LabelSpace.create(CELEBA, True, [HAIR])
    man = space.parse_attributes("Black_Hair,Male,Young")
    assert space.parse("no-Male", man).tolist() == [1, 0, 0, 0, 1]  # man -> woman, the rest kept
    assert space.parse("Blond_Hair,no-Young", man).tolist() == [0, 1, 0, 1, 0]
    with pytest.raises(UserError, match="unknown domain 'Bald'"):
        space.parse("no-Bald", man)
    with pytest.raises(UserError, match="Black_Hair and Blond_Hair are mutually exclusive"):
        space.parse_attributes("Black_Hair,Blond_Hair")
    logits = torch.tensor([2.0, 3.0, -1.0, 0.5, -0.2])  # two hair colours look likely: the stronger one wins
    assert space.one_per_group(logits).tolist() == [0, 1, 0, 1, 0]
    assert space.one_per_group(torch.tensor([-2.0, -3.0, -1.0, 1.0, 1.0])).tolist() == [0, 0, 0, 1, 1]
    single = LabelSpace.create(["no-a", "b"], False)  # single-label names are taken as they are
    assert int(single.parse("no-a")) == 0
