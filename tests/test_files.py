"""repaint.files: the PNG encoder reads back pixel for pixel; groups of files are all or nothing; modes follow umask."""

import io
import os
import stat

import numpy as np
import pytest
from PIL import Image

from repaint.files import atomic_write, ensure_writable, png_bytes, remove_temporaries, write_group


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (33, 17), (1, 300), (600, 700, 3)])
def test_png_bytes_decodes_to_the_same_pixels(shape):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    pixels[:, : shape[1] // 2] = 7                      # flat areas too: the Up filter's zero rows
    img = Image.open(io.BytesIO(png_bytes(pixels)))
    assert img.mode == ("RGB" if len(shape) == 3 else "L") and img.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(img), pixels)


def test_png_bytes_refuses_other_shapes():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((4, 4, 4), np.uint8))


def test_a_group_is_written_whole_or_not_at_all(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_group({tmp_path / "a.png": b"a", tmp_path / "b.png": boom, tmp_path / "c.png": b"c"})
    assert list(tmp_path.iterdir()) == []                # no target and no temporary left
    write_group({tmp_path / "a.png": b"a", tmp_path / "sub" / "b.png": b"b"})
    assert (tmp_path / "a.png").read_bytes() == b"a" and (tmp_path / "sub" / "b.png").read_bytes() == b"b"


def test_files_get_the_umask_mode_not_0600(tmp_path):
    path = atomic_write(tmp_path / "x.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_remove_temporaries_touches_only_the_named_targets(tmp_path):
    for name in (".img1.png.abc.tmp", ".img10.png.abc.tmp", ".img1_s0.png.x.tmp"):
        (tmp_path / name).write_bytes(b"")
    remove_temporaries([tmp_path / "img1.png"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".img10.png.abc.tmp", ".img1_s0.png.x.tmp"]


def test_ensure_writable_reports_a_read_only_folder_in_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):                   # root ignores permissions: a file stands in the way
            (tmp_path / "blocker").write_bytes(b"")
            target = tmp_path / "blocker" / "out"
        else:
            target = locked / "out"
        with pytest.raises(OSError, match="cannot write to the output folder"):
            ensure_writable([target])
    finally:
        locked.chmod(0o700)
