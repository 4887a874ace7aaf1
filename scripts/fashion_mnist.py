"""Fashion-MNIST IDX files for the check scripts, read the way `pixelcnn` reads them: NAME or NAME.gz in the data
directory, images binarized at v >= 85 (the project's threshold, 0.33 · 256 = 84.48, on integer bytes).

    import fashion_mnist as fm
    x = fm.binarized(fm.images(data_dir, "t10k-images-idx3-ubyte"))   # uint8 0/1, shape [n, 1, 28, 28]
    y = fm.labels(data_dir, "t10k-labels-idx1-ubyte")                  # int64, shape [n]
    x = fm.amat(data_dir, "binarized_mnist_test.amat")                 # statically binarized MNIST: uint8 0/1
"""
import gzip, os, sys

import numpy as np


def read(data_dir, name):
    """The bytes of NAME or NAME.gz in data_dir; exits naming both when neither is there."""
    for n in (name, name + ".gz"):
        p = os.path.join(data_dir, n)
        if os.path.exists(p):
            return (gzip.open if n.endswith(".gz") else open)(p, "rb").read()
    sys.exit(f"no {name}(.gz) in {data_dir}")


def images(data_dir, name):
    """An IDX image file as uint8 [n, 1, rows, cols], its shape taken from the header."""
    data = read(data_dir, name)
    n, h, w = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(data, np.uint8, offset=16).reshape(n, 1, h, w)


def labels(data_dir, name):
    """An IDX label file as int64 [n]."""
    return np.frombuffer(read(data_dir, name), np.uint8, offset=8).astype(np.int64)


def binarized(pixels):
    """The project's binarization: 1 where v >= 85, else 0."""
    return (pixels >= 85).astype(np.uint8)


def amat(data_dir, name):
    """A Larochelle & Murray `.amat` file (one 28×28 image per line, 784 space-separated 0/1 values), NAME or
    NAME.gz, as uint8 [n, 1, 28, 28]; already binary, so no threshold."""
    rows = [line.split() for line in read(data_dir, name).decode("ascii").splitlines() if line.strip()]
    return np.array(rows, np.uint8).reshape(len(rows), 1, 28, 28)
