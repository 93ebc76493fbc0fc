# Writes OUTPUT, a C++ file defining char_rnn::inspect_page_template from the text of INPUT.
file(READ ${INPUT} content)
set(delimiter "cellgrad_page")
file(WRITE ${OUTPUT}
     "// Generated from inspect_page.html by embed_page.cmake; do not edit.\n"
     "namespace char_rnn {\n"
     "extern const char* const inspect_page_template;\n"
     "const char* const inspect_page_template = R\"${delimiter}(${content})${delimiter}\";\n"
     "} // namespace char_rnn\n")
