"""Who is acting: the actor passed to every service call, with its permission questions."""
