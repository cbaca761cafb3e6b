"""One intra-op thread for the torch tests: their tensors are tiny, and on a shared 2-core CI
machine torch's OpenMP threads, waiting for each other at every kernel, made single steps take
milliseconds (the suite ran 5x slower under load). The results do not depend on it."""

import torch

torch.set_num_threads(1)
