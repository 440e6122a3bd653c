"""Paper reproductions: analysis, figures and scripts built on the engine, one module per paper.

A sweep file names a figure as ``"<module>.<function>"``: the function takes the sweep's
Dataset and returns a matplotlib Figure.
"""
