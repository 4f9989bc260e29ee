"""netspec: write a neural network once as a .net spec; analyze, draw, compile and train it."""
