"""INT8 calibration on real face crops (Xavier/Orin; the Nano has no INT8).

TensorRT's ``IInt8EntropyCalibrator2`` asks for batches of preprocessed input and
records activation ranges; the ranges are cached beside the engine so a rebuild skips
the calibration pass. Torch-free, Python 3.6.
"""
import os

import numpy as np


def make_calibrator(trt, cuda, batch, cache_path, batch_size=8):
    """An entropy calibrator over ``batch`` (float32 NCHW, preprocessed as the device does).

    Only whole batches of ``batch_size`` are used: TensorRT calibrates at one batch size.
    Needs a current CUDA context (pycuda) for its device buffer.
    """
    usable = len(batch) - len(batch) % batch_size
    if usable == 0:
        raise ValueError("INT8 calibration needs at least %d images, got %d" % (batch_size, len(batch)))
    chunks = [np.ascontiguousarray(batch[i:i + batch_size]) for i in range(0, usable, batch_size)]

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.pending = iter(chunks)
            self.device = cuda.mem_alloc(chunks[0].nbytes)

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            chunk = next(self.pending, None)
            if chunk is None:
                return None  # calibration done
            cuda.memcpy_htod(self.device, chunk)
            return [int(self.device)]

        def read_calibration_cache(self):
            if os.path.isfile(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            with open(cache_path, "wb") as f:
                f.write(bytes(cache))

    return EntropyCalibrator()
