"""Analysis of gathered evidence. `spans` judges traces; a root-cause module may join later."""
