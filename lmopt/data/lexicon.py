"""Word lists for the builtin story generator (`builtin.py`).

Plain data, written for lmopt: names, kinds of characters, places, things, feelings
and the story seeds (problems with their matching attempts and endings). Nouns are
singular and carry no article; `builtin.article` adds one.
"""

GIRL_NAMES = (
    "Lily", "Mia", "Sara", "Emma", "Zoe", "Anna", "Lucy", "Ella", "Ruby", "Rosa", "Nina", "Maya",
    "Sophie", "Grace", "Chloe", "Amira", "Priya", "Hana", "Leah", "Ivy", "Daisy", "Molly", "Kate",
    "Jenny", "Alice", "Olivia", "Nora", "Tara", "Ayla", "Fatima", "Wendy", "Luna", "Elsa", "Yuki",
)
BOY_NAMES = (
    "Tom", "Max", "Ben", "Sam", "Leo", "Jack", "Tim", "Finn", "Omar", "Ravi", "Kenji", "Lucas",
    "Noah", "Oscar", "Hugo", "Pablo", "Eli", "Jake", "Toby", "Dan", "Felix", "Milo", "Ali", "Theo",
    "Ivan", "Kofi", "Mateo", "Billy", "Owen", "Joe", "Arlo", "Raj", "Bruno", "Kai",
)
PET_NAMES = (
    "Benny", "Pip", "Coco", "Fluffy", "Spot", "Whiskers", "Bubbles", "Nibbles", "Sunny", "Ziggy",
    "Patch", "Biscuit", "Pepper", "Rusty", "Dot", "Honey", "Button", "Snowy", "Tiki", "Bolt",
    "Mimi", "Pickles", "Toffee", "Puddle", "Acorn", "Clover", "Peanut", "Maple",
)
ANIMALS = (
    "bunny", "rabbit", "fox", "bear", "cat", "kitten", "dog", "puppy", "mouse", "owl", "duck",
    "frog", "squirrel", "turtle", "pig", "lion", "tiger", "elephant", "monkey", "giraffe", "deer",
    "hedgehog", "penguin", "goat", "lamb", "pony", "hen", "bird", "bee", "ladybug", "dragon",
    "dinosaur", "whale", "seal", "badger", "beaver", "raccoon", "chick", "crab", "snail", "koala",
    "zebra", "otter", "butterfly",
)
GIRL_KINDS = ("girl", "girl", "princess", "farmer's daughter")
BOY_KINDS = ("boy", "boy", "prince", "farmer's son")
TRAITS = (
    "little", "small", "kind", "brave", "curious", "happy", "shy", "clever", "silly", "gentle",
    "playful", "friendly", "cheerful", "busy", "tiny", "young", "sleepy", "funny", "helpful",
    "careful", "quiet", "bold", "lively", "smart", "lazy", "jolly", "proud", "fast", "chubby",
)
HOMES = (
    "a small house near the forest", "a big red house on a hill", "a cozy hole under an oak tree",
    "a tall house by the sea", "a farm with many animals", "a busy town", "a quiet village",
    "a blue house with a round door", "an old cottage by the river", "a little flat in the city",
    "a warm nest high in a tree", "a tent at the edge of the woods", "a yellow house with a garden",
    "a boat on a wide lake", "a castle made of gray stone", "a den under a hill",
)
HOBBIES = (
    "play with blocks", "sing songs", "draw pictures", "run in the grass", "read books",
    "splash in puddles", "collect shells", "dance in the rain", "look at the stars",
    "climb trees", "bake cookies", "ride a bike", "build forts", "pick flowers", "chase butterflies",
    "tell jokes", "play hide and seek", "watch the clouds", "help in the garden", "jump rope",
)
# (place, preposition)
PLACES = (
    ("the park", "in"), ("the forest", "in"), ("the garden", "in"), ("the beach", "at"),
    ("the farm", "on"), ("the river", "by"), ("the hill", "on"), ("the meadow", "in"),
    ("the school yard", "in"), ("the kitchen", "in"), ("the library", "in"), ("the zoo", "at"),
    ("the pond", "by"), ("the village", "in"), ("the woods", "in"), ("the lake", "by"),
    ("the playground", "at"), ("the market", "at"), ("the field", "in"), ("the backyard", "in"),
    ("the mountain", "on"), ("the barn", "in"), ("the jungle", "in"), ("the seaside", "at"),
    ("the orchard", "in"), ("the bakery", "at"),
)
OBJECTS = (
    "ball", "kite", "teddy bear", "toy car", "doll", "book", "drum", "boat", "balloon",
    "blanket", "hat", "scarf", "shell", "marble", "puzzle", "robot", "train", "whistle", "bucket",
    "shovel", "yo-yo", "bell", "ribbon", "umbrella", "lantern", "necklace", "backpack", "mitten",
    "crown", "cup", "feather", "map", "key", "flute", "paintbrush", "spinning top", "watch",
    "compass", "jar of paint", "wooden horse",
)
COLORS = (
    "red", "blue", "green", "yellow", "purple", "orange", "pink", "white", "black", "brown",
    "golden", "silver",
)
QUALITIES = (
    "shiny", "soft", "new", "old", "tiny", "big", "round", "striped", "spotted", "fluffy",
    "special", "favorite", "bright", "little", "pretty", "heavy", "squeaky", "sparkly",
)
FOODS = (
    "apple", "cookie", "sandwich", "banana", "carrot", "cupcake", "pear", "muffin", "plum",
    "strawberry", "orange", "honey cake", "pie", "cherry", "peach", "pancake", "slice of bread",
    "bowl of soup", "piece of cheese", "bunch of grapes",
)
PARENTS = (
    ("mom", "she"), ("dad", "he"), ("grandma", "she"), ("grandpa", "he"), ("aunt", "she"),
    ("uncle", "he"), ("big sister", "she"), ("big brother", "he"), ("teacher", "she"),
)
OPENINGS = (
    "Once upon a time", "One day", "One sunny morning", "Long ago", "One rainy afternoon",
    "On a cold winter day", "One warm summer evening", "Early one spring morning", "Last week",
    "One windy autumn day", "One bright Saturday", "A long time ago", "One foggy morning",
)
LONG_AGO = ("Once upon a time", "Long ago", "A long time ago", "In a land far away")
WEATHER = (
    "The sun was shining and the birds were singing.", "The sky was gray and it was a little cold.",
    "A soft wind was blowing through the trees.", "It had rained, and everything smelled fresh.",
    "White snow covered the ground.", "The flowers were blooming everywhere.",
    "The air was warm and still.", "Big fluffy clouds floated across the sky.",
)
HIDING_SPOTS = (
    "under the bed", "behind the door", "under a big leaf", "inside a basket", "behind the sofa",
    "under a pile of leaves", "next to the old tree", "in the tall grass", "under the table",
    "inside a box", "behind a rock", "on top of the shelf", "in the mud", "near the fence",
    "under the slide", "inside a boot", "behind a flower pot", "in the sandbox",
)
SPEECH = ("said", "shouted", "whispered", "cried", "called", "laughed", "replied", "sighed")
GOOD_FEELINGS = ("happy", "glad", "proud", "excited", "thankful", "cheerful", "joyful", "calm")
BAD_FEELINGS = ("sad", "worried", "upset", "scared", "lonely", "grumpy", "nervous", "cross")

# (thing feared, what to do despite it, how it went once tried)
FEARS = (
    ("the dark", "sleep without the light on", "the dark room was just the same room, only quiet"),
    ("the big dog next door", "say hello to the dog", "the dog only wanted to play and wag its tail"),
    ("deep water", "swim in the lake", "the water held {him} up like a soft hand"),
    ("loud thunder", "watch the storm from the window", "the thunder was only a big noisy drum"),
    ("the tall slide", "go down the tall slide", "the slide was fast and fun"),
    ("the old bridge", "walk across the old bridge", "the bridge was strong and did not shake"),
    ("buzzing bees", "walk past the flowers", "the bees were busy and did not care about {him}"),
    ("the big waves", "play in the waves", "the waves only tickled {his} toes"),
    ("the first day of school", "go into the classroom", "the other children were friendly"),
    ("the high tree house", "climb the ladder", "the view from the top was wonderful"),
)
# (creature, its trouble, the help given, how it ended)
TROUBLES = (
    ("little bird", "had a hurt wing", "wrapped the wing in a soft cloth",
     "a few days later, the bird flew up into the sky"),
    ("small kitten", "was stuck high up in a tree", "brought a ladder and climbed up slowly",
     "the kitten purred and licked {his} hand"),
    ("baby duck", "could not find its mother", "walked along the pond and looked everywhere",
     "they found the mother duck behind the reeds"),
    ("tiny turtle", "was stuck on its back", "gently turned it over",
     "the turtle walked away slowly toward the water"),
    ("lost puppy", "was shivering in the rain", "gave it a warm blanket and some food",
     "the puppy's owner came and hugged it tight"),
    ("little snail", "was in the middle of the path", "carried it to a safe, green leaf",
     "the snail stayed safe from the busy feet"),
    ("bee", "was trapped inside a jar", "opened the lid very carefully",
     "the bee buzzed away to the flowers"),
    ("young squirrel", "had dropped all its nuts", "helped pick up every nut",
     "the squirrel had enough food for the winter"),
    ("hungry fish", "was in a puddle that was drying up", "carried it back to the river in a cup",
     "the fish swam away with a happy flick of its tail"),
)
# (thing to make, what went wrong, what worked)
PROJECTS = (
    ("a sandcastle", "a big wave washed it away", "build it far from the water"),
    ("a tower of blocks", "it fell down with a crash", "put the biggest blocks at the bottom"),
    ("a cake", "it came out flat", "follow the recipe one step at a time"),
    ("a paper boat", "it got wet and sank", "fold it from thicker paper"),
    ("a snowman", "its head kept rolling off", "pack the snow tight"),
    ("a bird house", "the roof fell off", "use more glue and wait for it to dry"),
    ("a painting of the sea", "the colors ran together", "let each color dry first"),
    ("a little garden", "the seeds did not grow", "water them every day"),
    ("a card for {parent}", "the paper tore in half", "use a new sheet and go slowly"),
    ("a blanket fort", "the roof kept falling down", "hold it up with two chairs"),
    ("a necklace of beads", "the string broke", "tie a strong knot at the end"),
)
# (thing found, what it turned out to be)
DISCOVERIES = (
    ("a shiny stone", "a piece of glass that made little rainbows on the wall"),
    ("a small wooden box", "full of old buttons and a letter from grandma"),
    ("a big egg in the grass", "the home of a baby duck, which hatched the next day"),
    ("a tiny door in a tree", "the front door of a family of mice"),
    ("an old map", "a map of the garden, and the X marked a patch of sweet berries"),
    ("a bottle with a note", "a note from a child across the lake who wanted a friend"),
    ("a strange sound", "a little frog singing under a bucket"),
    ("a trail of footprints", "the footprints of a big, friendly dog looking for its ball"),
    ("a glowing light in the bushes", "a group of fireflies dancing in the dark"),
)
# (what was forbidden, why, what went wrong)
RULES = (
    ("play near the river alone", "the water is fast", "{he} slipped and got very wet"),
    ("eat cookies before dinner", "dinner is ready soon", "{he} got a tummy ache"),
    ("touch the hot stove", "it will burn", "{he} burned {his} finger a little"),
    ("run inside the house", "something could break", "{he} knocked over a vase"),
    ("go out without a coat", "it is cold outside", "{he} started to shiver and sneeze"),
    ("climb on the wobbly shelf", "it is not safe", "the shelf tipped and the books fell down"),
    ("leave the gate open", "the goats will get out", "the goats ran into the garden"),
    ("stay up too late", "tomorrow is a big day", "{he} was too tired to play the next day"),
)
MORALS = {
    "lost": ("it is good to ask for help", "friends make every problem smaller",
             "being calm helps you find things", "it is smart to keep your things in one place"),
    "fear": ("being brave does not mean you are not scared", "trying new things can be fun",
             "things are often less scary than they seem", "a friend makes you braver"),
    "share": ("sharing makes everyone happy", "playing together is more fun than playing alone",
              "a good friend shares", "kind words can fix a sad day"),
    "make": ("if you keep trying, you can do it", "mistakes help you learn",
             "patience is important", "hard work pays off"),
    "help": ("helping others feels good", "even small friends need kindness",
             "being gentle is a kind of strength", "every creature deserves care"),
    "find": ("the world is full of surprises", "being curious is a wonderful thing",
             "it is fun to explore", "small things can be amazing"),
    "rule": ("it is important to listen", "rules keep us safe", "saying sorry is brave",
             "grown-ups often know best"),
}
