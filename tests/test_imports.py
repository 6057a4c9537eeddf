"""The package's import graph has no circles, lazy (function-level) imports included.

`lint-imports` (CI) keeps the layering and names the import to remove; this test says the same thing in
the suite, module by module, so a circle fails where a developer runs the tests.
"""

from __future__ import annotations

import grimp


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("orchestrator", cache_dir=None)
    circles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                circles.append(" -> ".join((importer, *back)))
    assert not circles, "import circles:\n" + "\n".join(circles)
