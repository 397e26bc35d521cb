"""Hostile-user probes of issue 20 (reliability and security, round 3), run against a source tree.

    python benchmarks/reliability_probes.py [--tree DIR] [--only SUBSTRING]

Each probe runs a command line (``python -m ...``) or a short Python snippet in a fresh
process with ``cwd=DIR`` (default: this checkout), in a temporary folder, and prints one row:
the probe, the exit status, the number of stderr lines, whether a traceback was printed, and
the probe's own check (marker file created, outside file read, wrong result accepted, ...).
Run it on two trees (before / after a change) to fill a before -> after table. Nothing is
written outside the temporary folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

# --------------------------------------------------------------------------------------------
# fixtures written by a snippet in the probed tree (its own io module)
# --------------------------------------------------------------------------------------------
SETUP = r"""
import os, pickle, struct, zlib, sys
import cv2, numpy as np, h5py
from pathlib import Path
from localize import image_io, io
T = Path(sys.argv[1])
def feats(n, seed):
    r = np.random.default_rng(seed); d = r.normal(size=(n, 8)).astype(np.float32)
    return {"keypoints": r.uniform(0, 50, (n, 2)).astype(np.float32),
            "descriptors": d / np.linalg.norm(d, axis=1, keepdims=True),
            "scores": np.ones(n, np.float32), "image_size": np.array([64, 64])}
"""


def snippet(body: str) -> str:
    return SETUP + textwrap.dedent(body)


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _images(t: Path, n: int = 2, side: int = 96) -> Path:
    import cv2
    import numpy as np

    d = t / "images"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((side, side)) * 255).astype(np.uint8), (5, 5), 2)
        cv2.imwrite(str(d / f"{i}.png"), img)
    return d


def _roxford(t: Path, cfg: dict) -> Path:
    d = t / "data" / "roxford5k"
    (d / "jpg").mkdir(parents=True, exist_ok=True)
    (d / "gnd_roxford5k.pkl").write_bytes(pickle_dumps(cfg))
    return t / "data"


def pickle_dumps(o) -> bytes:
    import pickle

    return pickle.dumps(o, protocol=4)


def _png_declaring(path: Path, w: int, h: int) -> None:
    import struct
    import zlib

    import cv2
    import numpy as np

    data = bytearray(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    ihdr = data[12:29]
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# probes: (group, name, prepare(t) -> (argv, check(t, proc) -> str))
# --------------------------------------------------------------------------------------------
def p_pickle(t):
    marker = t / "MARKER"
    root = _roxford(
        t,
        {"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "x": Evil(str(marker))}]},
    )
    return (
        ["-m", "pipelines.retrieval", "--data_root", str(root), "--outputs", str(t / "o")],
        lambda t, r: "MARKER CREATED" if marker.exists() else "no marker",
    )


def p_empty_imlist(t):
    root = _roxford(t, {"imlist": [], "qimlist": [], "gnd": []})
    return (
        ["-m", "pipelines.retrieval", "--data_root", str(root), "--outputs", str(t / "o")],
        None,
    )


def p_make_patches_outside(t):
    _images(t)
    import cv2
    import numpy as np

    cv2.imwrite(str(t / "outside.png"), np.zeros((96, 96), np.uint8))
    code = snippet("""
        import pycolmap
        from localize import colmap
        cam = {"model": "SIMPLE_PINHOLE", "width": 96, "height": 96, "params": [80, 48, 48]}
        rec = colmap.build_reference_reconstruction([cam], [
            {"name": n, "camera_idx": 0, "qvec_wxyz": [1, 0, 0, 0], "tvec": [i, 0, 0]}
            for i, n in enumerate(["0.png", "../outside.png"])])
        (T / "model").mkdir(); rec.write(str(T / "model"))
        from localize import make_patches
        read = []
        real = make_patches._load_gray
        make_patches._load_gray = lambda p: (read.append(str(p)), real(p))[1]
        try:
            make_patches.build("default", T / "images", T / "out", reference=T / "model",
                               progress=False)
        except Exception as e:
            print("error:", type(e).__name__, str(e)[:60])
        print("OUTSIDE READ" if any("outside" in p for p in read) else "outside not read")
    """)
    return ["-c", code, str(t)], "stdout"


def p_stale_matches(t):
    code = snippet("""
        from localize import match_features
        fp, mp = T / "f.h5", T / "m.h5"
        io.write_features(fp, "a.jpg", feats(10, 1)); io.write_features(fp, "b.jpg", feats(12, 2))
        (T / "p.txt").write_text("a.jpg b.jpg")
        match_features.main("nn-mutual", T / "p.txt", fp, matches=mp)
        io.write_features(fp, "a.jpg", feats(20, 3))
        match_features.main("nn-mutual", T / "p.txt", fp, matches=mp)
        with h5py.File(mp) as f:
            n = len(f[io.names_to_pair("a.jpg", "b.jpg")]["matches0"])
        print("recomputed" if n == 20 else f"STALE MATCHES KEPT (matches0 has {n} rows, 20 kps)")
    """)
    return ["-c", code, str(t)], "stdout"


def p_extract_other_conf(t, extra=("--max_keypoints", "32")):
    d = _images(t)
    subprocess.run(
        [
            PY,
            "-m",
            "localize.extract_features",
            "--conf",
            "sift",
            "--image_dir",
            str(d),
            "--feature_path",
            str(t / "f.h5"),
            "--max_keypoints",
            "64",
        ],
        cwd=t.cwd_tree,
        env=ENV,
        capture_output=True,
        timeout=300,
    )
    return (
        [
            "-m",
            "localize.extract_features",
            "--conf",
            "sift",
            "--image_dir",
            str(d),
            "--feature_path",
            str(t / "f.h5"),
            *extra,
        ],
        lambda t, r: (
            "SKIPPED (file kept other features)"
            if "skipping" in r.stderr
            else "refused"
            if r.returncode
            else "?"
        ),
    )


def p_extract_other_features(t):
    return p_extract_other_conf(t, ("--max_keypoints", "64", "--features", "foo"))


def p_fingerprint_middle(t):
    code = snippet("""
        p = T / "x.jpg"; p.write_bytes(bytes(300_000)); st = p.stat()
        f0 = image_io.image_fingerprint(p)
        b = bytearray(p.read_bytes()); b[150_000] = 1; p.write_bytes(bytes(b))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        print("change seen" if image_io.image_fingerprint(p) != f0 else "CHANGE MISSED")
    """)
    return ["-c", code, str(t)], "stdout"


def p_key_collision(t):
    code = snippet("""
        from localize import match_features
        fp, mp = T / "f.h5", T / "m.h5"
        for i, n in enumerate(("a/b.jpg", "a-b.jpg", "c.jpg")):
            io.write_features(fp, n, feats(8, i))
        (T / "p1.txt").write_text("a/b.jpg c.jpg"); (T / "p2.txt").write_text("a-b.jpg c.jpg")
        match_features.main("nn-mutual", T / "p1.txt", fp, matches=mp)
        try:
            match_features.main("nn-mutual", T / "p2.txt", fp, matches=mp)
            io.get_matches(mp, "a-b.jpg", "c.jpg")
            print("OTHER PAIR'S MATCHES RETURNED")
        except Exception as e:
            print("refused:", type(e).__name__)
    """)
    return ["-c", code, str(t)], "stdout"


def p_match_index(t, bad=600):
    code = snippet(f"""
        import inspect
        from types import SimpleNamespace
        from localize import localize_sfm as loc
        mp = T / "m.h5"
        m0 = np.full(512, -1, np.int32); m0[0] = 3
        io.write_matches(mp, "q.jpg", "db.jpg", m0)
        model = SimpleNamespace(track=lambda n: {{3: 7}}, ids={{"db.jpg": 2}},
                                num_keypoints=lambda n: 512)
        m0[0] = {bad}; io.write_matches(mp, "q.jpg", "db.jpg", m0)
        model.track = lambda n: {{{bad}: 7}}
        kw = {{"num_query_keypoints": 512}} if "num_query_keypoints" in \\
            inspect.signature(loc.correspondences).parameters else {{}}
        try:
            c = loc.correspondences("q.jpg", ["db.jpg"], model, mp, None, **kw)
            print(f"ACCEPTED ({{len(c.kp_idx)}} 2D-3D from index {bad})")
        except Exception as e:
            print("refused:", type(e).__name__)
    """)
    return ["-c", code, str(t)], "stdout"


def p_intrinsics(t, line="q.jpg SIMPLE_PINHOLE 64 64 -50 32 32"):
    code = snippet(f'''
        from localize import colmap
        try:
            colmap.camera_from_query_line("{line}"); print("ACCEPTED")
        except Exception as e:
            print("refused:", type(e).__name__)
    ''')
    return ["-c", code, str(t)], "stdout"


def p_strecha(t, rows7="nan 0 0", row0="100 0 32", row1="0 100 32"):
    rows = [row0, row1, "0 0 1", "0 0 0", "1 0 0", "0 1 0", "0 0 1", rows7, "64 64"]
    (t / "x.camera").write_text("\n".join(rows) + "\n")
    code = snippet("""
        from localize.data import strecha
        try:
            c = strecha.read_camera_file(T / "x.camera"); print("ACCEPTED")
        except Exception as e:
            print("refused:", type(e).__name__)
    """)
    return ["-c", code, str(t)], "stdout"


def p_features_ref(t):
    code = snippet("""
        io.write_features(T / "q.h5", "a.jpg", feats(8, 1))
        io.write_features(T / "d.h5", "a.jpg", feats(8, 2))
        try:
            io.FeatureReader([T / "q.h5", T / "d.h5"]); print("SILENT CHOICE")
        except Exception as e:
            print("refused:", type(e).__name__)
    """)
    return ["-c", code, str(t)], "stdout"


def p_truncated_h5(t):
    code = snippet("""
        fp = T / "f.h5"
        for i in range(3): io.write_features(fp, f"{i}.jpg", feats(200, i))
        b = fp.read_bytes(); fp.write_bytes(b[: len(b) // 2])
        try:
            io.get_keypoints(fp, "0.jpg")
        except Exception as e:
            print("MISLEADING 'being written'" if "being written" in str(e) else "says truncated"
                  if "truncated" in str(e) else str(e)[:60])
    """)
    return ["-c", code, str(t)], "stdout"


def p_run_lock(t):
    code = snippet("""
        import subprocess
        from localize import h5
        if not hasattr(h5, "run_lock"):
            print("NO RUN LOCK"); raise SystemExit
        (T / "ds").mkdir()
        with h5.run_lock(T / "out" / "sift"):
            r = subprocess.run([sys.executable, "-m", "pipelines.aachen", "--features", "sift",
                                "--dataset", str(T / "ds"), "--outputs", str(T / "out")],
                               capture_output=True, text=True)
        print(f"second run: exit {r.returncode}, " + ("names the holder" if "pid" in r.stderr
                                                     else r.stderr.strip()[-60:]))
    """)
    return ["-c", code, str(t)], "stdout"


def p_cli(*argv, check=None):
    def prep(t):
        a = [str(x).replace("{T}", str(t)) for x in argv]
        return ["-m", *a], check

    return prep


def _file(t, name="afile"):
    (t / name).write_text("x")


def p_extract(*extra):
    def prep(t):
        d = _images(t)
        return (
            [
                "-m",
                "localize.extract_features",
                "--conf",
                "sift",
                "--image_dir",
                str(d),
                "--feature_path",
                str(t / "f.h5"),
                *extra,
            ],
            lambda t, r: "f.h5 WRITTEN" if (t / "f.h5").exists() else "nothing written",
        )

    return prep


def p_train(*extra):
    def prep(t):
        return (
            [
                "-m",
                "pipelines.train",
                "--recipe",
                "hardnet",
                "--quick",
                "--out",
                str(t / "w.pt"),
                *extra,
            ],
            lambda t, r: "CHECKPOINT WRITTEN" if (t / "w.pt").exists() else "nothing written",
        )

    return prep


def p_train_out_notdir(t):
    _file(t)
    return (
        [
            "-m",
            "pipelines.train",
            "--recipe",
            "hardnet",
            "--quick",
            "--steps",
            "1",
            "--out",
            str(t / "afile" / "w.pt"),
        ],
        None,
    )


def p_export(atol):
    def prep(t):
        return (
            [
                "-m",
                "descriptors.export",
                "hardnet",
                "--format",
                "torchscript",
                "--out",
                str(t / "x.pt"),
                "--atol",
                atol,
            ],
            lambda t, r: "FILE LEFT/WRITTEN" if (t / "x.pt").exists() else "no file",
        )

    return prep


def p_export_dir(t):
    return (
        ["-m", "descriptors.export", "hardnet", "--format", "torchscript", "--out", str(t)],
        None,
    )


def p_localize_results_dir(t):
    (t / "f.h5").write_text("x")
    return (
        [
            "-m",
            "localize.localize_sfm",
            "--reference_sfm",
            str(t),
            "--queries",
            "q",
            "--retrieval",
            str(t / "f.h5"),
            "--features",
            str(t / "f.h5"),
            "--matches",
            str(t / "f.h5"),
            "--results",
            str(t),
        ],
        None,
    )


def p_tri_sfm_file(t):
    _file(t)
    (t / "f.h5").write_text("x")
    return (
        [
            "-m",
            "localize.triangulation",
            "--sfm_dir",
            str(t / "afile"),
            "--reference_model",
            str(t),
            "--image_dir",
            str(t),
            "--pairs",
            str(t / "f.h5"),
            "--features",
            str(t / "f.h5"),
            "--matches",
            str(t / "f.h5"),
        ],
        None,
    )


def p_aachen_outputs_file(t):
    _file(t)
    return (["-m", "pipelines.aachen", "--features", "sift", "--outputs", str(t / "afile")], None)


def p_extract_ro(t):
    d = _images(t)
    return (
        [
            "-m",
            "localize.extract_features",
            "--conf",
            "sift",
            "--image_dir",
            str(d),
            "--export_dir",
            "/sys/descloc_probe",
        ],
        None,
    )


def p_pairs_non_utf8(t):
    code = snippet("""
        io.write_features(T / "f.h5", "a.jpg", feats(5, 1))
    """)
    subprocess.run([PY, "-c", code, str(t)], cwd=t.cwd_tree, env=ENV, timeout=120)
    (t / "p.txt").write_bytes(b"a.jpg a.jpg\n\xff\xfe.jpg a.jpg\n")
    return (
        [
            "-m",
            "localize.match_features",
            "--pairs",
            str(t / "p.txt"),
            "--features",
            str(t / "f.h5"),
        ],
        None,
    )


def p_list_non_utf8(t):
    d = _images(t)
    (t / "l.txt").write_bytes(b"0.png\n\xe9t\xe9.png\n")
    return (
        [
            "-m",
            "localize.extract_features",
            "--conf",
            "sift",
            "--image_dir",
            str(d),
            "--image_list",
            str(t / "l.txt"),
            "--feature_path",
            str(t / "f.h5"),
        ],
        None,
    )


def p_name_non_utf8(t):
    d = _images(t)
    os.rename(d / "1.png", os.path.join(os.fsencode(d), b"caf\xe9.png"))
    return (
        [
            "-m",
            "localize.extract_features",
            "--conf",
            "sift",
            "--image_dir",
            str(d),
            "--feature_path",
            str(t / "f.h5"),
        ],
        lambda t, r: "f.h5 written" if (t / "f.h5").exists() else "nothing written",
    )


def _png_zeros(path: Path, w: int, h: int) -> None:
    """A real w x h 8-bit grey PNG of zeros, streamed (a few hundred KB, little memory)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    z = zlib.compressobj(9)
    row = bytes(w + 1)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def p_pixel_cap(t):
    _png_zeros(t / "big.png", 20000, 20000)
    code = snippet("""
        import resource
        try:
            image_io.read_image(T / "big.png")
        except Exception as e:
            kind = "cap" if "cap" in str(e) else "decode error"
            mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"refused ({kind}), peak RSS {mb:.0f} MB")
        else:
            mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            kb = (T / "big.png").stat().st_size // 1024
            print(f"DECODED, peak RSS {mb:.0f} MB ({kb} KB file)")
    """)
    return ["-c", code, str(t)], "stdout"


PROBES = [
    ("1", "retrieval: gnd pickle with __reduce__", p_pickle),
    ("1", "retrieval: empty imlist/qimlist/gnd", p_empty_imlist),
    ("2", "make_patches: ../outside.png in the model", p_make_patches_outside),
    ("3", "match after re-extraction (stale pairs)", p_stale_matches),
    ("3", "extract: other --max_keypoints on F", p_extract_other_conf),
    ("3", "extract: --features foo on F", p_extract_other_features),
    ("3", "fingerprint: middle byte changed", p_fingerprint_middle),
    ("3", "pair-key collision across runs", p_key_collision),
    ("3", "match index 600 (512 kps) -> localization", p_match_index),
    ("3", "match index 2^30 -> localization", lambda t: p_match_index(t, 2**30)),
    ("3", "query focal -50", p_intrinsics),
    ("3", "query focal nan", lambda t: p_intrinsics(t, "q.jpg SIMPLE_PINHOLE 64 64 nan 32 32")),
    ("3", "query focal 1e308", lambda t: p_intrinsics(t, "q.jpg SIMPLE_PINHOLE 64 64 1e308 32 32")),
    ("3", "query width 0", lambda t: p_intrinsics(t, "q.jpg SIMPLE_PINHOLE 0 64 50 32 32")),
    ("3", "Strecha camera NaN centre", p_strecha),
    ("3", "Strecha camera inf focal", lambda t: p_strecha(t, "0 0 0", "inf 0 32")),
    ("3", "Strecha camera zero focal", lambda t: p_strecha(t, "0 0 0", "0 0 32", "0 0 32")),
    (
        "3",
        "hpatches --pool-sizes 0",
        p_cli(
            "pipelines.hpatches", "--features", "sift", "--pool-sizes", "0", "--data", "{T}/nope"
        ),
    ),
    ("3", "--features_ref: same name, other kps", p_features_ref),
    ("4", "truncated HDF5 message", p_truncated_h5),
    ("5", "second aachen run on the same outputs", p_run_lock),
    ("6", "train --steps 0", p_train("--steps", "0")),
    ("6", "train --batch_size -4", p_train("--steps", "1", "--batch_size", "-4")),
    ("6", "train --lr nan", p_train("--steps", "1", "--lr", "nan")),
    ("6", "train --data typo", p_train("--steps", "1", "--data", "{T}/typo")),
    ("6", "train --option bogus=1", p_train("--steps", "1", "--option", "bogus=1")),
    ("6", "train --option init=missing", p_train("--steps", "1", "--option", "init=missing.pt")),
    ("6", "train --eval_only without weights", p_train("--eval_only")),
    ("6", "train --out under a file", p_train_out_notdir),
    (
        "6",
        "train_and_localize --recipe foo",
        p_cli("pipelines.train_and_localize", "--recipe", "foo", "--outputs", "{T}/o"),
    ),
    ("6", "extract --device bogus", p_extract("--device", "bogus")),
    (
        "6",
        "aachen --device cuda:7",
        p_cli(
            "pipelines.aachen",
            "--features",
            "sift",
            "--device",
            "cuda:7",
            "--outputs",
            "{T}/o",
            "--dataset",
            "{T}",
        ),
    ),
    (
        "6",
        "phototour --batch 0",
        p_cli(
            "pipelines.phototour",
            "--features",
            "sift",
            "--batch",
            "0",
            "--out",
            "{T}/o",
            "--data",
            "{T}/nope",
        ),
    ),
    (
        "6",
        "localize --max_error_px -1",
        p_cli(
            "localize.localize_sfm",
            "--reference_sfm",
            "{T}",
            "--queries",
            "{T}/q",
            "--retrieval",
            "{T}/r",
            "--features",
            "{T}/f",
            "--matches",
            "{T}/m",
            "--results",
            "{T}/r.txt",
            "--max_error_px",
            "-1",
        ),
    ),
    ("6", "export --atol nan", p_export("nan")),
    ("6", "export --atol -1", p_export("-1")),
    ("6", "extract --merge 0", p_extract("--merge", "0")),
    ("6", "extract --num_workers -3", p_extract("--num_workers", "-3")),
    ("6", "extract --commit_interval nan", p_extract("--commit_interval", "nan")),
    (
        "6",
        "pairs_from_covisibility --num_matched 0",
        p_cli(
            "localize.pairs_from_covisibility",
            "--model",
            "{T}",
            "--output",
            "{T}/p.txt",
            "--num_matched",
            "0",
        ),
    ),
    ("7", "extract --export_dir not writable (/sys)", p_extract_ro),
    ("7", "export --out a directory", p_export_dir),
    ("7", "localize --results a directory", p_localize_results_dir),
    ("7", "triangulate --sfm_dir a file", p_tri_sfm_file),
    ("7", "aachen --outputs a file", p_aachen_outputs_file),
    ("7", "non-UTF-8 bytes in a pairs file", p_pairs_non_utf8),
    ("7", "non-UTF-8 bytes in an image list", p_list_non_utf8),
    ("7", "non-UTF-8 file name in --image_dir", p_name_non_utf8),
    ("8", "PNG declaring 20000x20000", p_pixel_cap),
    (
        "9",
        "hpatches --data missing",
        p_cli(
            "pipelines.hpatches", "--features", "sift", "--data", "{T}/nope", "--outputs", "{T}/o"
        ),
    ),
    (
        "9",
        "phototour --data missing",
        p_cli("pipelines.phototour", "--features", "sift", "--data", "{T}/nope", "--out", "{T}/o"),
    ),
    (
        "9",
        "export sift (not a network)",
        p_cli("descriptors.export", "sift", "--format", "torchscript", "--out", "{T}/s.pt"),
    ),
]


class _TmpPath(type(Path())):
    cwd_tree: str = "."


def run_probe(tree: Path, prep) -> str:
    with tempfile.TemporaryDirectory(prefix="probe.") as d:
        t = _TmpPath(d)
        t.cwd_tree = str(tree)
        argv, check = prep(t)
        try:
            r = subprocess.run(
                [PY, *argv], cwd=tree, env=ENV, capture_output=True, text=True, timeout=300
            )
        except subprocess.TimeoutExpired:
            return "timeout (300 s)"
        if check == "stdout":
            out = r.stdout.strip().splitlines()
            tb = "Traceback" in r.stderr
            return (out[-1] if out else f"exit {r.returncode}") + (" [traceback]" if tb else "")
        lines = [
            ln for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("[")
        ]  # log lines start with [
        tb = any(ln.startswith("Traceback") for ln in lines)
        s = f"exit {r.returncode}, " + (
            f"{len(lines)}-line traceback" if tb else f"{len(lines)} line(s)"
        )
        if check is not None:
            extra = check(t, r)
            if extra:
                s += f"; {extra}"
        return s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tree", type=Path, default=REPO, help="source tree to probe")
    p.add_argument("--only", default=None, help="run the probes whose name contains this")
    a = p.parse_args(argv)
    for group, name, prep in PROBES:
        if a.only and a.only not in name:
            continue
        print(f"{group}\t{name}\t{run_probe(a.tree.resolve(), prep)}", flush=True)


if __name__ == "__main__":
    main()
