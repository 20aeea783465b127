"""A CPU platform for verl 0.9.1, whose platform registry only knows accelerators."""

from verl_ext.platform.cpu import PLATFORM_NAME, PlatformCPU, cpu_platform_selected

__all__ = ["PLATFORM_NAME", "PlatformCPU", "cpu_platform_selected"]
