/*
 * The engine options of a file node (aio and the io_uring settings), as
 * ringblk-img --engine-opts and ringblk-io --image-opts -o take them on top
 * of an image the tool already names. Anything else (filename, driver,
 * node-name, cache.*) is refused: it would change which file is opened or
 * how, behind the file name the user gave.
 */
#ifndef TOOLS_ENGINE_OPTS_H
#define TOOLS_ENGINE_OPTS_H

#include "qapi/qapi.h"

/*
 * Parses keyval text ("fixed-files=on,sqpoll=on") into a tree of string
 * leaves holding only engine options. NULL with errp on a syntax error or
 * another key ("Invalid parameter 'filename'").
 */
JsonObject *engine_opts_parse(const char *text, Error **errp);

#endif
