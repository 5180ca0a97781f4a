import numpy as np
import pytest

import cityscapesscripts.helpers.labels as cs_labels

from hrseg.data import labels as L



def test_every_label_matches_cityscapesscripts() -> None:
    ref = list(cs_labels.labels)
    assert len(L.LABELS) == len(ref) == 35
    for ours, theirs in zip(L.LABELS, ref):
        assert tuple(ours) == tuple(theirs)


def test_lookup_tables_round_trip() -> None:
    for lab in cs_labels.labels:
        if lab.id < 0:
            continue
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert L.LABEL_TO_TRAIN[lab.id] == expected
    for train_id in range(19):
        label_id = L.TRAIN_TO_LABEL[train_id]
        assert cs_labels.id2label[int(label_id)].trainId == train_id
        assert tuple(L.PALETTE[train_id]) == cs_labels.trainId2label[train_id].color
    assert L.TRAIN_TO_LABEL[255] == 0
    assert (L.LABEL_TO_TRAIN[34:] == 255).all()


def test_class_names_and_subsets() -> None:
    assert L.CLASS_NAMES == tuple(cs_labels.trainId2label[i].name for i in range(19))
    assert len(L.eval_classes(16)) == 16 and len(L.eval_classes(13)) == 13
    assert not {9, 14, 16} & set(L.eval_classes(16))
    assert not {3, 4, 5, 9, 14, 16} & set(L.eval_classes(13))
    with pytest.raises(ValueError):
        L.eval_classes(7)


def test_synthia_map_covers_19_classes() -> None:
    assert sorted(L.SYNTHIA_ID_TO_TRAIN.values()) == list(range(19))
    assert L.SYNTHIA_TO_TRAIN[3] == 0 and L.SYNTHIA_TO_TRAIN[11] == 18
    assert L.SYNTHIA_TO_TRAIN[0] == 255 and L.SYNTHIA_TO_TRAIN[22] == 255


def test_colorize() -> None:
    ids = np.array([[0, 255], [13, 10]], dtype=np.uint8)
    rgb = L.colorize(ids)
    assert rgb.shape == (2, 2, 3)
    assert tuple(rgb[0, 0]) == (128, 64, 128) and tuple(rgb[0, 1]) == (0, 0, 0)
