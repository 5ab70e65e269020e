"""Bastion: find and stop child sexual exploitation and abuse on an online service.

Data flows one way: content -> signals -> matches -> verdict -> case -> action/report.
"""

__version__ = "0.1.0"
