"""The FerricFlow programming model: records, outcomes, policies, clients and workers."""
