"""rgct: region-grounded radiology reports for 3D chest CT."""

__version__ = "0.1.0"
