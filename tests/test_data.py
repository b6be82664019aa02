"""Data: the folder layout, its error messages, the shapes generator and the transforms."""

import os
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

from hvit.data import (
    SHAPE_CLASSES,
    HViTDataset,
    ImageReadError,
    ShapesDataset,
    build_transforms,
    dataset_stats,
    estimate_mean_std,
    load_classic,
    load_dataset,
    make_shapes,
    write_shapes,
)
from hvit.preprocessing import Preprocessing


def save(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


# --- HViTDataset ------------------------------------------------------------------------------------------


def test_reads_layout_sorted_classes_and_converts_modes(tmp_path):
    gray = Image.fromarray(np.full((6, 5), 128, np.uint8), "L")
    palette = Image.fromarray(np.full((4, 4), 200, np.uint8), "L").convert("P")
    sixteen = Image.fromarray(np.full((3, 3), 65535, np.uint16))  # 16-bit grayscale: white
    rgba = Image.new("RGBA", (2, 2), (10, 20, 30, 255))
    save(tmp_path / "train" / "zebra" / "a.png", gray)
    save(tmp_path / "train" / "apple" / "b.GIF", palette)  # upper-case extension counts
    save(tmp_path / "train" / "apple" / "nested" / "c.png", sixteen)
    save(tmp_path / "train" / "mango" / "d.webp", rgba)
    save(tmp_path / "train" / "mango" / "e.bmp", gray)
    (tmp_path / "train" / "mango" / "notes.txt").write_text("not an image")
    save(tmp_path / "train" / ".ipynb_checkpoints" / "x.png", gray)  # hidden: not a class

    ds = HViTDataset(tmp_path, split="train")
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.class_to_idx == {"apple": 0, "mango": 1, "zebra": 2}
    assert len(ds) == 5
    assert [label for _, label in ds.samples] == [0, 0, 1, 1, 2]
    images = [ds[i][0] for i in range(len(ds))]
    assert all(img.mode == "RGB" for img in images)
    assert images[0].getpixel((0, 0)) == (200, 200, 200)  # palette -> RGB
    assert images[1].getpixel((0, 0)) == (255, 255, 255)  # 16-bit white stays white, not clipped junk
    assert images[4].getpixel((0, 0)) == (128, 128, 128)  # grayscale -> RGB
    assert HViTDataset(tmp_path, split="train", mode=None)[4][0].mode == "L"


def test_transform_is_applied(tmp_path):
    save(tmp_path / "val" / "a" / "1.png", Image.new("L", (28, 28), 255))
    pre = Preprocessing(img_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x, y = HViTDataset(tmp_path, transform=build_transforms(pre), split="val")[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    assert torch.allclose(x, torch.ones_like(x))  # white, normalised: (1 - 0.5) / 0.5


def test_missing_root_and_split(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"nowhere' does not exist; expected the layout root/<split>/<class name>"
    ):
        HViTDataset(tmp_path / "nowhere")
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"split folder .*val' does not exist.*Folders found in .*: test, train"
    ):
        HViTDataset(tmp_path, split="val")


def test_empty_folders(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no class folders in .*train"):
        HViTDataset(tmp_path)
    save(tmp_path / "train" / "loose.png", Image.new("RGB", (2, 2)))
    with pytest.raises(
        FileNotFoundError, match="1 image files directly: move them into one folder per class"
    ):
        HViTDataset(tmp_path)
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"class folder .*cat' holds no image files"):
        HViTDataset(tmp_path)


def test_unreadable_file_names_the_path(tmp_path):
    bad = tmp_path / "train" / "cat" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    ds = HViTDataset(tmp_path)
    with pytest.raises(ImageReadError, match=r"'.*broken.png' is not a readable image .*; give a PNG"):
        ds[0]


def test_symlinked_folders_are_followed_but_each_file_is_counted_once(tmp_path):
    """Links to folders elsewhere are read; links back into the split (loops) are not followed, so no
    image is counted twice or filed under two classes."""
    img = Image.new("RGB", (2, 2))
    save(tmp_path / "train" / "cat" / "a.png", img)
    save(tmp_path / "train" / "dog" / "b.png", img)
    save(tmp_path / "elsewhere" / "c.png", img)
    (tmp_path / "train" / "cat" / "loop").symlink_to(tmp_path / "train", target_is_directory=True)
    (tmp_path / "train" / "cat" / "self").symlink_to(".", target_is_directory=True)
    (tmp_path / "train" / "dog" / "root").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "train" / "dog" / "ext").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "back").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    ds = HViTDataset(tmp_path)
    split = tmp_path / "train"
    assert ds.samples == [
        (str(split / "cat" / "a.png"), 0),
        (str(split / "dog" / "b.png"), 1),
        (str(split / "dog" / "ext" / "c.png"), 1),
    ]


def test_a_class_folder_linked_into_the_split_is_refused(tmp_path):
    save(tmp_path / "train" / "cat" / "a.png", Image.new("RGB", (2, 2)))
    (tmp_path / "train" / "kitty").symlink_to(tmp_path / "train" / "cat", target_is_directory=True)
    with pytest.raises(
        FileNotFoundError, match=r"class folder '.*kitty' holds no image files \(it is a link to '.*cat'"
    ):
        HViTDataset(tmp_path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_special_files_in_a_data_folder_are_refused_when_scanning(tmp_path):
    save(tmp_path / "train" / "cat" / "a.png", Image.new("RGB", (2, 2)))
    save(tmp_path / "train" / "dog" / "b.png", Image.new("RGB", (2, 2)))
    pipe = tmp_path / "train" / "dog" / "pipe.png"
    os.mkfifo(pipe)
    # Scanning looks at the folder entries only and cannot block on the pipe.
    with pytest.raises(ImageReadError, match=r"'.*pipe.png' is a named pipe \(FIFO\), not a regular file"):
        HViTDataset(tmp_path)
    pipe.unlink()
    (tmp_path / "train" / "dog" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(
        ImageReadError, match=r"'.*gone.png' is a link to '.*nowhere.png', which does not exist"
    ):
        HViTDataset(tmp_path)


def test_the_data_set_reads_through_the_one_image_reader(tmp_path, monkeypatch):
    import hvit.data.images as images

    save(tmp_path / "train" / "cat" / "a.png", Image.new("RGB", (40, 30)))
    save(tmp_path / "train" / "dog" / "b.png", Image.new("RGB", (2, 2)))
    monkeypatch.setattr(images, "DEFAULT_MAX_SIDE", 32)  # the module-level default applies to data sets
    ds = HViTDataset(tmp_path)
    assert ds[1][0].size == (2, 2)
    with pytest.raises(ImageReadError, match=r"'.*a.png' is 40x30 pixels; use one between 1 and 32"):
        ds[0]


# --- shapes ---------------------------------------------------------------------------------------------


def test_shapes_are_deterministic_balanced_and_split_apart():
    x1, y1, m1 = make_shapes(24, 32, seed=3)
    x2, y2, m2 = make_shapes(24, 32, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(m1, m2)
    assert x1.shape == (24, 3, 32, 32) and x1.dtype == torch.uint8 and m1.dtype == torch.bool
    # A prefix of a larger set is the smaller set: image i depends only on (seed, split, i).
    assert torch.equal(make_shapes(6, 32, seed=3)[0], x1[:6])
    assert torch.bincount(y1).tolist() == [4] * len(SHAPE_CLASSES)
    assert not torch.equal(make_shapes(6, 32, seed=4)[0], x1[:6])
    assert not torch.equal(make_shapes(6, 32, seed=3, split="val")[0], x1[:6])


def test_shape_masks_mark_the_object():
    images, labels, masks = make_shapes(30, 32, seed=0)
    area = masks.float().mean((1, 2))
    assert (area > 0.03).all() and (area < 0.6).all()
    # Inside the (eroded) mask the pixels are one flat colour plus the 3% noise; the whole image is not.
    eroded = (-F.max_pool2d(-masks[:, None].float(), 3, stride=1, padding=1))[:, 0].bool()
    x = images.float() / 255
    for i in range(len(x)):
        inside = x[i][:, eroded[i]]  # (3, pixels)
        assert inside.shape[1] > 5
        assert inside.std(dim=1).max() < 0.06
        assert x[i].flatten(1).std(dim=1).max() > inside.std(dim=1).max()


def test_shapes_at_any_size_keep_the_same_scenes():
    _, y_small, m_small = make_shapes(6, 32, seed=5)
    x_big, y_big, m_big = make_shapes(6, 64, seed=5)
    assert x_big.shape == (6, 3, 64, 64) and torch.equal(y_small, y_big)
    down = F.avg_pool2d(m_big[:, None].float(), 2)[:, 0] >= 0.5
    iou = (down & m_small).sum((1, 2)) / (down | m_small).sum((1, 2))
    assert (iou > 0.8).all()


def test_write_shapes_matches_memory_and_masks_are_not_classes(tmp_path):
    write_shapes(tmp_path, {"train": 12, "val": 6}, img_size=24, seed=1)
    ds = HViTDataset(tmp_path, split="train")
    assert ds.classes == list(SHAPE_CLASSES) and len(ds) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train_masks", "val", "val_masks"]
    images, labels, masks = make_shapes(12, 24, seed=1)
    for path, label in ds.samples:
        i = int(path.rsplit("_", 1)[1].split(".")[0])
        assert label == labels[i]
        assert torch.equal(torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1), images[i])
        mask_path = path.replace("/train/", "/train_masks/")
        assert torch.equal(torch.from_numpy(np.array(Image.open(mask_path)) > 127), masks[i])


def test_shapes_dataset_moves_masks_with_the_image():
    ds = ShapesDataset(6, 32, seed=2, return_mask=True, transform=v2.RandomHorizontalFlip(p=1.0))
    image, label, mask = ds[1]
    raw_image, raw_label, raw_mask = ds.sample(1)
    assert label == raw_label == 1
    assert torch.equal(image, raw_image.flip(-1)) and torch.equal(mask, raw_mask.flip(-1))


def test_bad_shapes_arguments():
    with pytest.raises(ValueError, match="img_size must be an int >= 8, got 4"):
        make_shapes(2, img_size=4)
    with pytest.raises(ValueError, match="classes must be at least two of"):
        make_shapes(2, classes=["circle", "blob"])


# --- transforms and loading -----------------------------------------------------------------------------


def test_build_transforms_contract():
    pre = Preprocessing(img_size=32, mean=(0.2, 0.4, 0.6), std=(0.1, 0.2, 0.3))
    flat = Image.new("RGB", (20, 20), (51, 102, 153))  # exactly the mean
    x = build_transforms(pre)(flat)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.zeros_like(x), atol=1e-5)
    train = build_transforms(pre, train=True)
    img = ShapesDataset(1, 32).sample(0)[0]
    torch.manual_seed(0)
    a = train(img)
    torch.manual_seed(0)
    assert torch.equal(a, train(img))  # augmentation is driven by the torch RNG only
    assert any(not torch.equal(a, train(img)) for _ in range(5))
    gray = build_transforms(Preprocessing(img_size=16, mean=(0.5,), std=(0.5,)))(flat)
    assert gray.shape == (1, 16, 16)
    with pytest.raises(ValueError, match="augment must be one of .* got 'heavy'"):
        build_transforms(pre, train=True, augment="heavy")


def test_estimate_mean_std_and_stats(tmp_path):
    for i, v in enumerate([0, 255]):
        save(tmp_path / "train" / "c" / f"{i}.png", Image.new("L", (8, 8), v))
    mean, std = estimate_mean_std(HViTDataset(tmp_path), img_size=8)
    assert mean == pytest.approx((0.5,) * 3) and std == pytest.approx((0.5,) * 3)
    assert dataset_stats(tmp_path, img_size=8) == (mean, std)
    assert dataset_stats("mnist")[0] == pytest.approx((0.1307,) * 3)


def test_load_dataset_entry_point(tmp_path):
    pre = Preprocessing(img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)
    shapes = load_dataset("shapes", "val", pre, num_samples=6, return_mask=True)
    x, y, m = shapes[0]
    assert x.shape == (3, 16, 16) and m.shape == (16, 16)
    write_shapes(tmp_path, {"train": 6}, img_size=16)
    folder = load_dataset(str(tmp_path), "train", pre)
    assert folder.classes == list(SHAPE_CLASSES) and folder[0][0].shape == (3, 16, 16)
    with pytest.raises(
        ValueError, match="unknown data set 'imagenet'.*shapes, mnist, fashion-mnist, cifar10"
    ):
        load_dataset("imagenet")


def test_classic_offline_message_and_local_files(tmp_path):
    with pytest.raises(
        RuntimeError,
        match=r"Fashion-MNIST is not in .*put them in '.*FashionMNIST/raw'.*train-images-idx3-ubyte.gz",
    ):
        load_classic("fashion-mnist", "train", root=tmp_path, download=False)
    # Files placed where the message says are used without any network access.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 5), ("t10k", 3)):
        images = np.arange(n * 28 * 28, dtype=np.uint8).reshape(n, 28, 28)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(range(n)))
    ds = load_dataset(
        "mnist",
        "val",
        Preprocessing(img_size=32, mean=(0.1,) * 3, std=(0.3,) * 3),
        data_dir=tmp_path,
        download=False,
    )
    assert len(ds) == 3 and len(ds.classes) == 10
    x, y = ds[2]
    assert x.shape == (3, 32, 32) and y == 2
