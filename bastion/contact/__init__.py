"""Child-contact safety from events and metadata (issue 15): the event schema, the contact
decisions of Ofcom's ICU F1/F2, behavioural risk detectors and a synthetic-population simulator.

Pure: no database, web or HTTP imports anywhere in this package. The storage, intake and
API edges are built on top of it.
"""
