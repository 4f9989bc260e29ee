"""Static assets of the web view (`netspec serve`): one page, its script and its style."""
