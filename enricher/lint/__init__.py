"""`enricher lint`: checks Prometheus alert rules for pages worth waking up for.

The layout follows cloudflare/pint: the loader turns rule files into `Rule` records that keep
their file and line, `promql.Query` computes what a query means once per rule, every check in
`checks/` reads those and returns `Finding`s, and the formatters in `report/` print them.
Nothing here imports the server stack, so the command starts fast.
"""
