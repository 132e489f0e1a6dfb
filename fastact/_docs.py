DOCS = {}
ROW_DOCS = {}
