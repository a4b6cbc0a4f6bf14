"""Tools beside the surfaces: replay, bench, eval-gaps. They drive the same services the worker uses."""
