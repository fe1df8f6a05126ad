from .export import export

for path in export():
    print(path)
