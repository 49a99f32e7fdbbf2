"""The execution engine: an operation compiled once into a plan, run level by level.

A validated document and its operation name compile (`plan.py`) into a plan for this schema:
which fields each selection reads straight from a record (`leaves.py`), and which it loads
through the request's dataloaders (`fields.py`). Running a plan (`run.py`) loads every
relation of one level with one batch, for all its parents at once (at once where the backend
has it at hand), and builds the response as plain dicts and lists. `engine.py` keeps the plans
(per document, operation name and the values of its `@skip`/`@include` conditions), answers
an operation when its plan covers it, and as a schema extension puts that in front of
graphql-core's executor, which answers the rest (introspection, federation fields, anything
the plan does not know).
"""
