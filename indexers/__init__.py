"""Pure producers: discovery, languages, symbols, chunking, embedding."""
