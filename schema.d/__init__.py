# Makes the core's base SDL importable as package data (plugboard._schema).
