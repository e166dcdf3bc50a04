"""Video in and out: cameras, files and streams as ``Source``s, displays, files and streams as ``Sink``s."""
