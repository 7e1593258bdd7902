import os

# Tests run on the synthetic stand-in only: never real data, never a download.
os.environ.setdefault("CIFAR_COURSE_PROFILE", "smoke")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
