"""Tables, plots and the Markdown/HTML report of an evaluation."""
