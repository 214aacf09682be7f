module strait.dev/images/pause

go 1.24
