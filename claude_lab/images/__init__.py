"""The lab's images: build contexts, content hashes, builds in dependency order, progress as events."""
from .builder import (BY_NAME, DEFAULT_IMAGES, IMAGES, PACKAGE_IMAGES, BuildEvent, BuildOutcome, ImageBuilder, ImageSpec,
                      ca_cert_files, order)
from .progress import LineProgress, Progress, reporter

__all__ = ["BY_NAME", "DEFAULT_IMAGES", "IMAGES", "PACKAGE_IMAGES", "BuildEvent", "BuildOutcome", "ImageBuilder",
           "ImageSpec", "LineProgress", "Progress", "ca_cert_files", "order", "reporter"]
