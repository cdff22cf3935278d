"""A plugin for the upload-memory benchmark: consumes an upload, returns its size and hash.

Loaded by dotted path (``plugins: [upload_sink]`` with bench/ on PYTHONPATH).
"""

import hashlib

from plugboard import hookimpl


@hookimpl
def plugboard_schema():
    return "extend type Mutation { sink(file: Upload!): String! }"


async def sink(parent, args, context, info):
    digest = hashlib.sha256()
    size = 0
    async for chunk in args["file"].stream():
        digest.update(chunk)
        size += len(chunk)
    return f"{size}:{digest.hexdigest()}"


@hookimpl
def plugboard_resolvers():
    return {"Mutation.sink": sink}
