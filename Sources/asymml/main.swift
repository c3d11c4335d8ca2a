print("asymml")
