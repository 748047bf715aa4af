"""Text the built-in tiny model's tokenizer is trained on: common English words, kitchen
vocabulary, numbers and the punctuation of JSON and chat. Function and kitchen words become
whole tokens; everything else is spelled with byte-level BPE pieces. Shipped as code so it needs no
package-data configuration. Changing it changes the tokenizer: bump ``TINY_VERSION``."""

from __future__ import annotations

# The most frequent English words: with KITCHEN_WORDS, each becomes a single token.
FUNCTION_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from
they we say her she or an will my one all would there their what so up out if about who get
which go me when make can like time no just him know take people into year your good some
could them see other than then now look only come its over think also back after use two how
our work first well way even new want because any these give day most us is are was were been
has had did does said made may should must shall might very more much many few each every both
assistant helpful extract generic ingredient ingredients recipe recipes provided title directions
answer question user system please thank
"""

COMMON_WORDS = """
either neither such own same another between through during before under again further once
here why where while until since without within along across around against toward upon off
down above below near far next last long great little old big high small large different
important right left early late young able bad best better sure free full hard easy clear
close common whole real simple possible open short strong true whole public able human local
late special certain major private ready fine quick slow hot cold warm cool dry wet fresh
soft light dark heavy sweet sour bitter salty rich plain thick thin fine smooth rough
man woman child world life hand part place case week company system program question number
night point home water room mother area money story fact month lot right study book eye job
word business issue side kind head house service friend father power hour game line end
member law car city community name president team minute idea kid body information back
parent face others level office door health person art war history party result change
morning reason research girl guy moment air teacher force education food table kitchen
family dinner lunch breakfast supper meal dish recipe cook chef oven stove pan pot bowl
cup spoon fork knife plate glass jar can box bag sheet rack lid skillet saucepan griddle
say tell ask call try need feel become leave put mean keep let begin seem help talk turn
start show hear play run move live believe hold bring happen write provide sit stand lose
pay meet include continue set learn lead understand watch follow stop create speak read
allow add spend grow offer remember love consider appear buy wait serve die send expect
build stay fall cut reach kill remain suggest raise pass sell require report decide pull
extract provided assistant helpful generic ingredient ingredients title directions answer
user system example examples list question response instruction input output text data
please thank thanks hello yes no okay sure sorry maybe always never often sometimes usually
today tomorrow yesterday now later soon again still already ever almost enough quite rather
one two three four five six seven eight nine ten eleven twelve twenty thirty forty fifty
hundred thousand first second third fourth fifth half quarter dozen double single pair
red orange yellow green blue purple brown black white gray pink golden
"""

KITCHEN_WORDS = """
flour sugar salt pepper butter margarine shortening oil olive vegetable canola lard eggs egg
whites yolks milk buttermilk cream whipping heavy sour cheese cheddar parmesan mozzarella
swiss american cottage ricotta yogurt vanilla extract baking soda powder yeast cornstarch
cornmeal oats rolled quick oatmeal rice noodles macaroni spaghetti pasta bread crumbs
crackers saltine graham biscuits tortillas cereal flakes chips chocolate cocoa semi-sweet
unsweetened sweetened coconut flaked shredded nuts pecans walnuts almonds peanuts peanut
cashews raisins dates cherries cranberries blueberries strawberries raspberries apples
apple bananas banana lemon lemons juice lime orange oranges peaches pears pineapple grapes
pumpkin zucchini squash carrots carrot celery onion onions garlic cloves clove potatoes
potato sweet tomatoes tomato sauce paste ketchup mustard mayonnaise vinegar cider wine
soy worcestershire honey syrup molasses jam jelly preserves marshmallows gelatin pudding
mix soup broth stock bouillon cubes cream of mushroom chicken celery beef pork ham bacon
sausage turkey shrimp tuna salmon fish crab meat ground chops steak roast links strips
slices mushrooms broccoli spinach corn kernel peas beans green kidney pinto lettuce
cabbage cucumber pepper peppers jalapeno chili cinnamon nutmeg ginger cloves allspice
paprika oregano basil parsley thyme sage rosemary dill bay leaf leaves cumin curry
seasoning spices herbs dried crushed minced chopped diced sliced grated mashed beaten
melted softened cooked uncooked boiled fried browned toasted drained divided packed
firmly sifted self-rising all-purpose granulated powdered confectioners evaporated
condensed frozen canned bottled fresh ripe peeled seedless halved broken whole lean boneless
skinless thick thin large medium small extra virgin low-sodium light dark pure kosher sea
elbow wide long grain style french cut smoked sharp part-skim stiffly tart crunchy creamy
cup cups c. tablespoon tablespoons Tbsp. teaspoon teaspoons tsp. ounce ounces oz. pound
pounds lb. lbs. pint pt. quart qt. gallon pkg. package can cans jar carton stick sticks
dash pinch head stalks ribs sleeve bunch loaf inch 9 x 13-inch 8-inch square round
preheat oven degrees bake baked baking boil simmer stir stirring mix mixing combine beat
whisk fold cream blend pour spread sprinkle top cover chill refrigerate freeze cool serve
serving servings season taste tender golden until minutes hours hour overnight heat medium
low high skillet saucepan bowl greased ungreased waxed paper pan dish casserole plate
cookies cake bread muffins bars pie brownies squares cobbler fudge pound crisp salad stew
dip skillet stir fry supreme hot chowder loaf spread easy quick grandma's mom's aunt mary's
old-fashioned best no-bake country sunday simple company holiday creamy classic family
teaspoonfuls cutting before after then well gradually several light fluffy large optional
room temperature in a the and or with over into onto for to of at by
add let drain place cook drop brown white black red cold warm dry fine soft real plain unsalted
skim solid prepared stewed buttered coffee
"""

SYMBOLS = """
0 1 2 3 4 5 6 7 8 9 10 12 15 16 20 25 30 45 60 100 325 350 375 400 425 450
1/2 1/3 1/4 2/3 3/4 1/8 1 1/2 2 1/2 10 3/4 (8 oz.) (10 oz.) (12 oz.) (16 oz.)
. , ; : ! ? ' " ( ) [ ] { } - -- / & % $ # @ * + = < > _ |
["a", "b"] ["flour", "sugar", "eggs"] {"role": "user", "content": "text"}
Title: Ingredients: Directions: Generic ingredients: Answer: Question: Context:
"""


def corpus_lines() -> list[str]:
    """The corpus as lines, each also in title case."""
    lines: list[str] = []
    for block in (FUNCTION_WORDS, COMMON_WORDS, KITCHEN_WORDS, SYMBOLS):
        for line in block.strip().splitlines():
            lines += [line, line.title()]
    return lines


def whole_word_forms() -> list[str]:
    """Texts whose pre-tokens each become one token: every function and kitchen word after
    a space, capitalised after a space, and bare (after a quote, bracket or newline, or
    first in an answer); function words also bare and capitalised ("You", "Title")."""
    texts: list[str] = []
    for block, bare_capitalised in ((FUNCTION_WORDS, True), (KITCHEN_WORDS, False)):
        for line in block.strip().splitlines():
            texts += [" " + line, " " + line.title(), *line.split()]
            if bare_capitalised:
                texts += line.title().split()
    return texts
