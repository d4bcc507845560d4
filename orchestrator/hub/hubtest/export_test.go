package hubtest

// Dir returns the directory of r's git repository, for tests that ask git about it themselves.
func Dir(r *Repo) string { return r.dir }
