"""The catalog: images, observations with a class hierarchy (≤ 4 levels), context attributes, selections
compiled to SQL, and spatially disjoint splits. Embedded in a GeoPackage, or scaled out to PostGIS.

Entry points: :func:`aifactory.catalog.store.open_catalog`, :func:`aifactory.catalog.build.build_catalog`,
:class:`aifactory.catalog.selection.Selection`, :func:`aifactory.catalog.splits.assign_splits` and
:func:`aifactory.catalog.splits.find_leaks`.
"""
