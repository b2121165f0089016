"""The app's routers, one module per concern: the JSON routes (``sessions``, ``batches``, ``bulk``,
``admin``) and the Clickstream page's HTML routes (``page``), all read through the same store dependency
(:data:`clickstream.web.holder.StoreDep`)."""
