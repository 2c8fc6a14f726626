"""Builtin corpus: seeded short children's stories in simple past-tense English.

`generate_stories(n, seed)` draws every choice from one `numpy.random.default_rng`
stream, so the same `(n, seed)` gives the same stories on every run and machine, and
the first k stories of a longer draw equal `generate_stories(k, seed)`. Each story is
an arc (setting, problem, attempt, resolution, moral) chosen from seven kinds (lost
thing, fear, sharing, making, helping, discovery, broken rule), with dialogue,
pronouns that agree with each character, and words from `lexicon.py`.
About 2000 stories (~1.3 MB) take well under a second.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from lmopt.data import lexicon as lx

_STORY_STREAM = 0x5702  # keeps the story stream apart from other uses of the same seed
_PRONOUNS = {
    "she": {"he": "she", "him": "her", "his": "her", "himself": "herself"},
    "he": {"he": "he", "him": "him", "his": "his", "himself": "himself"},
}


class _Draw:
  """Uniform choices read from pre-drawn blocks of a numpy Generator (fast, reproducible)."""

  def __init__(self, rng: np.random.Generator, block: int = 4096):
    self._rng, self._block = rng, block
    self._u, self._i = rng.random(block), 0

  def uniform(self) -> float:
    if self._i == self._block:
      self._u, self._i = self._rng.random(self._block), 0
    self._i += 1
    return float(self._u[self._i - 1])

  def pick(self, seq: Sequence):
    return seq[int(self.uniform() * len(seq))]

  def chance(self, p: float) -> bool:
    return self.uniform() < p

  def distinct(self, seq: Sequence, k: int) -> list:
    """k different items of `seq` (k <= len(seq))."""
    out = []
    while len(out) < k:
      item = self.pick(seq)
      if item not in out:
        out.append(item)
    return out


class Character(NamedTuple):
  name: str
  kind: str  # "girl", "fox", ...
  trait: str
  words: dict  # pronoun forms: he/him/his/himself and capitalised He/His


def article(phrase: str) -> str:
  """`a` or `an` before `phrase` (by its first letter; the lexicon has no exceptions)."""
  return "an" if phrase[0] in "aeiou" else "a"


def _cap(text: str) -> str:
  return text[0].upper() + text[1:]


def _character(d: _Draw, avoid: str = "") -> Character:
  gender = d.pick(("he", "she"))
  if d.chance(0.6):
    names = lx.GIRL_NAMES if gender == "she" else lx.BOY_NAMES
    kind = d.pick(lx.GIRL_KINDS if gender == "she" else lx.BOY_KINDS)
  else:
    names, kind = lx.PET_NAMES, d.pick(lx.ANIMALS)
  name = d.pick(names)
  while name == avoid:
    name = d.pick(names)
  words = dict(_PRONOUNS[gender])
  words.update({k.capitalize(): v.capitalize() for k, v in _PRONOUNS[gender].items()})
  return Character(name, kind, d.pick(lx.TRAITS), words)


def _fill(template: str, c: Character, **extra) -> str:
  """Fills {he}/{him}/{his}/{He}... with the pronouns of `c`, plus `extra` fields."""
  return template.format(**c.words, **extra)


def _say(d: _Draw, who: str, words: str, verbs: Sequence[str] = lx.SPEECH) -> str:
  """A line of dialogue by `who` (lower case allowed), the speech verb before or after it."""
  verb = "asked" if words.endswith("?") and verbs is lx.SPEECH else d.pick(verbs)
  if d.chance(0.5):
    return f"{_cap(who)} {verb}, \"{words}\""
  if words.endswith("."):
    words = words[:-1] + ","
  return f"\"{words}\" {verb} {who}." if d.chance(0.3) else f"\"{words}\" {who} {verb}."


def _thing(d: _Draw) -> str:
  """A described object without article, e.g. `shiny red kite`."""
  adjective = d.pick(lx.COLORS) if d.chance(0.6) else d.pick(lx.QUALITIES)
  return f"{adjective} {d.pick(lx.OBJECTS)}"


def _intro(d: _Draw, h: Character, f: Character, parent: str) -> list[str]:
  opening = d.pick(lx.OPENINGS)
  a_kind = f"{article(h.trait)} {h.trait} {h.kind}"
  first = d.pick((
      f"{opening}, there was {a_kind} named {h.name}.",
      f"{d.pick(lx.LONG_AGO)}, {a_kind} called {h.name} lived in {d.pick(lx.HOMES)}.",
      f"{h.name} was {a_kind} who lived in {d.pick(lx.HOMES)}.",
  ))
  hobby = d.pick(lx.HOBBIES)
  second = d.pick((
      _fill("{He} loved to {hobby}.", h, hobby=hobby),
      _fill("Every day, {he} liked to {hobby} with {his} {parent}.", h, hobby=hobby, parent=parent),
      f"{h.name}'s best friend was {f.name}, {article(f.trait)} {f.trait} {f.kind}.",
  ))
  out = [first, second]
  if d.chance(0.4):
    out.append(d.pick(lx.WEATHER))
  return out


def _lost(d, h, f, parent):
  thing, place = _thing(d), d.pick(lx.PLACES)
  obj = thing.split(" ", 1)[1]
  spots = d.distinct(lx.HIDING_SPOTS, 3)
  return [
      [_fill(d.pick(("{name} had {a} {thing} that {he} loved very much.",
                     "{name}'s {parent} gave {him} {a} {thing} for {his} birthday.")),
             h, name=h.name, a=article(thing), thing=thing, parent=parent),
       _fill("One day, {he} took the {obj} to {place}, and {he} played with it all morning.",
             h, obj=obj, place=place[0]),
       d.pick((f"But when it was time to go home, the {obj} was gone!",
               f"Suddenly, {h.name} could not find the {obj} anywhere.")),
       _say(d, h.name, f"Where is my {obj}?")],
      [_fill("{He} looked {s0} and {s1}, but it was not there. {He} felt very {bad}.", h,
             s0=spots[0], s1=spots[1], bad=d.pick(lx.BAD_FEELINGS)),
       f"Then {f.name} came by and saw {h.words['his']} face.",
       _say(d, f.name, "What is wrong?"),
       _say(d, h.name, f"I lost my {obj}. Can you help me find it?"),
       _say(d, f.name, d.pick(("Of course! Let's look together.", "Don't worry. I will help.")))],
      [d.pick((f"Together they looked {spots[2]}. There it was!",
               f"{f.name} saw something {spots[2]}. It was the {obj}!")),
       _fill("{name} hugged {friend} and felt {good} again.", h, name=h.name, friend=f.name,
             good=d.pick(lx.GOOD_FEELINGS))],
  ]


def _fear(d, h, f, parent):
  thing, action, result = d.pick(lx.FEARS)
  helper = f.name if d.chance(0.5) else f"{h.words['his']} {parent}"
  return [
      [_fill("{name} was afraid of {thing}. {He} did not want to {action}.", h, name=h.name,
             thing=thing, action=action),
       _say(d, h.name, d.pick(("I can't do it. It is too scary.", "What if something bad happens?")))],
      [_cap(f"{helper} sat down next to {h.words['him']}."),
       _say(d, helper, d.pick(("You are braver than you think.",
                                     "I will stay right here with you.",
                                     "Let's try it together, one small step at a time."))),
       _fill("{name} took a deep breath and decided to {action}.", h, name=h.name, action=action)],
      [_fill("To {his} surprise, " + result + ".", h),
       _fill("{He} felt so {good}!", h, good=d.pick(lx.GOOD_FEELINGS)),
       _say(d, h.name, d.pick(("That was not so bad!", "I did it!", "Can we do it again?")))],
  ]


def _share(d, h, f, parent):
  food = d.chance(0.4)
  noun = d.pick(lx.FOODS) if food else d.pick(lx.OBJECTS)
  thing = noun if food else f"{d.pick(lx.QUALITIES)} {noun}"
  ask = f"Can I share your {noun}?" if food else f"Can I have a turn with your {noun}?"
  place = d.pick(lx.PLACES)
  return [
      [f"{h.name} and {f.name} were playing {place[1]} {place[0]}.",
       f"{h.name} had {article(thing)} {thing}.",
       _say(d, f.name, ask),
       _say(d, h.name, d.pick(("No, it is mine!", "No! Go away.", "Not now. Maybe later.")))],
      [f"{f.name} felt {d.pick(lx.BAD_FEELINGS)} and walked away slowly.",
       _fill("{name} sat alone with the {noun}, but it was not fun anymore. {He} felt bad inside.",
             h, name=h.name, noun=noun)],
      [_fill("So {he} ran after {friend}.", h, friend=f.name),
       _say(d, h.name, d.pick(("I am sorry. Let's share.",
                               "I was not kind. Here, let's share it."))),
       f"{f.name} smiled. They shared the {noun} and laughed together until the sun went down."],
  ]


def _make(d, h, f, parent):
  project, fail, fix = d.pick(lx.PROJECTS)
  project = project.format(parent=f"{h.words['his']} {parent}")
  helper = f.name if d.chance(0.5) else f"{h.words['his']} {parent}"
  return [
      [_fill("{name} wanted to make {project}. {He} worked hard all afternoon.", h, name=h.name,
             project=project),
       f"But {fail}.",
       _fill("{name} felt {bad}. {He} wanted to give up.", h, name=h.name,
             bad=d.pick(lx.BAD_FEELINGS))],
      [_cap(f"{helper} came to see what was wrong."),
       _say(d, helper, f"Don't give up. Try to {fix}."),
       _fill("So {name} tried again. This time, {he} remembered to {fix}.", h, name=h.name,
             fix=fix)],
      [d.pick(("It worked!", "This time it was perfect.", "And it was even better than before.")),
       _say(d, h.name, d.pick(("Look what I made!", "I did it all by myself!", "Thank you!"))),
       _fill("{He} felt very {good}.", h, good=d.pick(lx.GOOD_FEELINGS))],
  ]


def _help(d, h, f, parent):
  creature, trouble, aid, ending = d.pick(lx.TROUBLES)
  place = d.pick(lx.PLACES)
  return [
      [(f"{h.name} was walking {place[1]} {place[0]} when {h.words['he']} saw "
        f"{article(creature)} {creature}."),
       f"The {creature} {trouble}.",
       _say(d, h.name, d.pick((f"Oh no! Poor little {creature}.",
                               "Don't be scared. I will help you.")))],
      [_fill("{He} knelt down and " + aid + ".", h),
       d.pick(("It was not easy, but " + h.words["he"] + " was careful and gentle.",
               f"{f.name} came to help too."))],
      [_cap(_fill(ending, h)) + ".",
       _fill("{name} smiled. {He} felt {good} in {his} heart.", h, name=h.name,
             good=d.pick(lx.GOOD_FEELINGS))],
  ]


def _find(d, h, f, parent):
  thing, truth = d.pick(lx.DISCOVERIES)
  place = d.pick(lx.PLACES)
  return [
      [f"{h.name} was exploring {place[1]} {place[0]} when {h.words['he']} found {thing}.",
       _say(d, h.name, "What could it be?", ("wondered", "asked", "whispered"))],
      [_fill("{He} ran to show {friend}. They looked at it closely.", h, friend=f.name),
       _say(d, f.name, d.pick(("Maybe it is magic!", "Let's find out.",
                               "I have never seen anything like it.")))],
      [f"At last, they understood. It was {truth}.",
       f"{h.name} and {f.name} felt {d.pick(lx.GOOD_FEELINGS)} and told everyone about it."],
  ]


def _rule(d, h, f, parent):
  rule, why, wrong = d.pick(lx.RULES)
  return [
      [_fill("{name}'s {parent} said, \"Please do not {rule}, because {why}.\"", h, name=h.name,
             parent=parent, rule=rule, why=why),
       _fill("{name} nodded. But later, {he} wanted to {rule} anyway.", h, name=h.name, rule=rule)],
      [_cap(_fill(wrong, h)) + ".",
       _fill("{name} felt {bad} and went to find {his} {parent}.", h, name=h.name, parent=parent,
             bad=d.pick(lx.BAD_FEELINGS)),
       _say(d, h.name, "I am sorry. I should have listened.")],
      [_fill("{His} {parent} gave {him} a big hug.", h, parent=parent),
       _say(d, f"{h.words['his']} {parent}", d.pick((
           "Thank you for telling me the truth.", "Everyone makes mistakes. Now you know.")))],
  ]


_ARCS: dict[str, Callable] = {"lost": _lost, "fear": _fear, "share": _share, "make": _make,
                              "help": _help, "find": _find, "rule": _rule}
_ARC_NAMES = tuple(_ARCS)


def _moral(d: _Draw, h: Character, arc: str) -> str:
  moral = d.pick(lx.MORALS[arc])
  return d.pick((f"{h.name} learned that {moral}.", f"That day, {h.name} learned that {moral}.",
                 f"From then on, {h.name} knew that {moral}."))


def _story(d: _Draw) -> str:
  hero = _character(d)
  friend = _character(d, avoid=hero.name)
  parent = d.pick(lx.PARENTS)[0]
  arc = d.pick(_ARC_NAMES)
  paragraphs = [_intro(d, hero, friend, parent)] + _ARCS[arc](d, hero, friend, parent)
  if d.chance(0.8):
    paragraphs[-1].append(_moral(d, hero, arc))
  return "\n".join(" ".join(p) for p in paragraphs)


def generate_stories(num_stories: int, seed: int) -> list[str]:
  """Returns `num_stories` stories, a pure function of `(num_stories, seed)`; seed >= 0."""
  d = _Draw(np.random.default_rng([_STORY_STREAM, seed]))
  return [_story(d) for _ in range(num_stories)]
