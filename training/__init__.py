"""The OCR workload: data pipeline, DBNet model, Lightning trainer and benchmark.

OpenCV is limited to one thread here, before any OpenCV call: a process that has used
OpenCV's thread pool and then forks (DataLoader workers, benchmark contenders)
deadlocks in the child's first parallel OpenCV call. Parallelism comes from the
DataLoader workers instead.
"""

import cv2

cv2.setNumThreads(1)
