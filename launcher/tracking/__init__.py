"""What a run records: the text log, the loggers the loop writes to (TensorBoard), and the HTML report of a run or a sweep."""
