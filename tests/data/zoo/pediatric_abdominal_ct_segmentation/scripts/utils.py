def test():
    print("Test Function PRINTS")
